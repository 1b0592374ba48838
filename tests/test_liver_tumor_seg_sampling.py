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
    first = {0: 0, 1: 0}
    for _ in range(400):
        x, lab = patch_batch([vol], rng, (8, 16, 16), 1, p_tumour=1.0, hard=hard)
        k = hard.last[0]
        assert k in (0, 1)
        first[k] += 1
        # the "network" finds lesion 0 and misses lesion 1: predicted tumour only where x > 0.5 in
        # the left half of the volume, as the label says for lesion 0
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

