"""liver_tumor_seg's lesion-balanced patch sampling (0.3.0): a tumour patch is centred on a
lesion drawn uniformly among the exam's lesions, so a small satellite is drawn about as often
as a large lesion instead of in proportion to its voxels."""

from __future__ import annotations

import numpy as np

from mvi_node.recipes.liver_tumor_seg.data import HardLesions, Volume, lesion_components, patch_batch


def _two_lesion_volume() -> Volume:
    y = np.zeros((40, 96, 96), np.uint8)
    y[5:35, 5:50, 5:50] = 2  # a large lesion: 60,750 voxels
    y[18:21, 80:84, 80:84] = 2  # a small one: 48 voxels, ~1/1000 of the tumour
    x = np.stack([(0.2 + 0.6 * (y == 2)).astype(np.float32)] * 2)
    return Volume(x, y, "t", np.flatnonzero(y == 2), np.flatnonzero(y == 1), lesion_components(y))


def _share_on_small(vol: Volume, balanced: bool, n: int = 200) -> float:
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(n):
        _, lab = patch_batch([vol], rng, (8, 16, 16), 1, p_tumour=1.0, lesion_balanced=balanced)
        # a patch centred in the large lesion (+-1/4 patch jitter) holds hundreds of its voxels;
        # one centred on the small lesion holds at most the small one's 48
        hits += int(0 < (lab == 2).sum() <= 48)
    return hits / n


def test_lesion_components_split_the_tumour_by_connectivity():
    vol = _two_lesion_volume()
    sizes = sorted(len(c) for c in vol.lesion_idx)
    assert sizes == [48, 60750]
    assert set(np.concatenate(vol.lesion_idx).tolist()) == set(vol.tumour_idx.tolist())


def test_lesion_balanced_sampling_draws_the_small_lesion_about_half_the_time():
    vol = _two_lesion_volume()
    voxel = _share_on_small(vol, balanced=False)
    balanced = _share_on_small(vol, balanced=True)
    assert voxel < 0.05  # voxel-weighted: the small lesion is almost never a patch centre
    assert 0.35 < balanced < 0.65


# Online hard-lesion mining (0.6.0): a lesion the network keeps missing centres more patches.

def _two_equal_lesions() -> Volume:
    y = np.zeros((24, 64, 64), np.uint8)
    y[8:16, 8:20, 8:20] = 2  # lesion 0
    y[8:16, 40:52, 40:52] = 2  # lesion 1, the same size
    x = np.stack([(0.2 + 0.6 * (y == 2)).astype(np.float32)] * 2)
    return Volume(x, y, "h", np.flatnonzero(y == 2), np.flatnonzero(y == 1), lesion_components(y))


def test_hard_lesions_learn_which_lesion_is_missed_and_draw_it_more_often():
    vol = _two_equal_lesions()
    hard = HardLesions([vol], floor=0.25)
    assert len(hard.keys) == 2 and np.allclose(hard.miss, 0.5)  # unseen: no preference
    rng = np.random.default_rng(0)
    for _ in range(400):
        x, lab = patch_batch([vol], rng, (8, 16, 16), 1, p_tumour=1.0, hard=hard)
        k = hard.last[0]
        assert k in (0, 1)
        # the "network" finds lesion 0 (predicts its patch's label) and misses lesion 1 (predicts nothing)
        pred = np.where(lab == 2, 2, 0) if hard.keys[k][1] == 0 else np.zeros_like(lab)
        hard.update(lab, pred)
    assert hard.miss[0] < 0.05 and hard.miss[1] > 0.95
    w = hard.floor + hard.miss
    assert 0.8 < w[1] / w.sum() < 0.85  # (0.25 + 1) / (0.25 + 1 + 0.25 + 0)
    drawn = [hard.draw(rng) for _ in range(2000)]
    assert 0.78 < np.mean(drawn) < 0.87  # the missed lesion, about 5 times in 6


def test_hard_lesions_leave_other_patches_unmarked_and_ignore_patches_without_tumour():
    vol = _two_equal_lesions()
    hard = HardLesions([vol])
    _, lab = patch_batch([vol], np.random.default_rng(1), (8, 16, 16), 6, p_tumour=0.0, p_liver=0.0, hard=hard)
    assert hard.last == [-1] * 6
    before = hard.miss.copy()
    hard.update(lab, np.zeros_like(lab))
    assert np.array_equal(hard.miss, before)
    # a tumour patch whose label holds no tumour voxel (not possible when centred, but padded
    # or cropped patches may) changes nothing either
    hard.last = [0]
    hard.update(np.zeros((1, 1, 8, 16, 16), np.int64), np.zeros((1, 8, 16, 16), np.int64))
    assert np.array_equal(hard.miss, before)


# Fainter lesions (0.7.0): training shows lesions with less contrast than the generator drew.

def test_fainter_lesions_shrink_contrast_to_the_patch_liver_and_keep_the_rest():
    from mvi_node.recipes.seg_patches import fainter_lesions

    lab = np.zeros((4, 8, 8), np.uint8)
    lab[:, :, :4] = 1
    lab[1:3, 2:6, 5:7] = 2
    px = np.stack([np.where(lab == 2, 0.9, np.where(lab == 1, 0.5, 0.1)).astype(np.float32),
                   np.where(lab == 2, 0.2, np.where(lab == 1, 0.4, 0.0)).astype(np.float32),
                   np.zeros(lab.shape, np.float32)])  # a missing phase
    out = fainter_lesions(px, lab, 0.25)
    assert np.allclose(out[0][lab == 2], 0.5 + 0.4 * 0.25) and np.allclose(out[1][lab == 2], 0.4 - 0.2 * 0.25)
    assert np.array_equal(out[:, lab != 2], px[:, lab != 2])  # liver and background untouched
    assert not out[2].any()  # a missing channel stays zero
    assert np.array_equal(fainter_lesions(px, np.where(lab == 2, 0, lab), 0.25), px)  # no tumour: unchanged
    assert np.array_equal(px[0][lab == 2], np.full(int((lab == 2).sum()), 0.9, np.float32))  # input not modified


def test_patch_batch_makes_lesions_fainter_with_the_given_probability():
    vol = _two_lesion_volume()
    vol.y[vol.y == 0] = 1  # the whole volume liver (0.2) around the lesions (0.8)
    vol = Volume(vol.x, vol.y, "f", vol.tumour_idx, np.flatnonzero(vol.y == 1), vol.lesion_idx)
    rng = np.random.default_rng(3)
    contrasts = []
    for _ in range(200):
        x, lab = patch_batch([vol], rng, (8, 16, 16), 1, p_tumour=1.0, fainter=(0.5, 0.4))
        t, l = lab[0, 0] == 2, lab[0, 0] == 1
        if t.any() and l.any():
            # the intensity augmentation scales both alike, so the ratio to the undisturbed 0.6 contrast is k
            a = x[0, 0]
            contrasts.append((np.median(a[t]) - np.median(a[l])) / 0.6)
    k = np.asarray(contrasts)
    assert len(k) > 100
    unchanged = np.mean(k > 0.92)  # the x0.9-1.1 intensity factor alone keeps k >= ~0.9 (plus noise)
    assert 0.35 < unchanged < 0.75
    assert k.min() > 0.3 and np.mean(k < 0.7) > 0.15  # fainter ones reach down to ~0.4
