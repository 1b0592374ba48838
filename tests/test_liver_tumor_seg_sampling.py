"""liver_tumor_seg's lesion-balanced patch sampling (0.3.0): a tumour patch is centred on a
lesion drawn uniformly among the exam's lesions, so a small satellite is drawn about as often
as a large lesion instead of in proportion to its voxels."""

from __future__ import annotations

import numpy as np

from mvi_node.recipes.liver_tumor_seg.data import Volume, lesion_components, patch_batch


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
