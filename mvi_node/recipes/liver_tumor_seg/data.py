"""Training volumes from in-memory synthetic exams, on the model grid the node serves.

Each exam is simulated (arterial phase only), put in the slice order the node reads a
series in (ascending along the slice normal, so feet first), resampled and windowed by
the recipe's own :meth:`~mvi_node.infer.segmentation.SegmentationRecipe.model_input`,
and its truth made into labels 0 background, 1 liver, 2 tumour (nearest neighbour).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mvi_node.infer.segmentation import resample
from mvi_node.recipes.liver_tumor_seg.recipe import LiverTumorSeg
from mvi_node.synth import simulate_exam
from mvi_node.synth.anatomy import L

RECIPE = LiverTumorSeg()


@dataclass
class Volume:
    x: np.ndarray  # (z, y, x) float32 0..1
    y: np.ndarray  # (z, y, x) uint8 0/1/2
    key: str
    tumour_idx: np.ndarray  # flat indices of tumour voxels (patch centres)
    liver_idx: np.ndarray


def target_labels(labels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    out = (labels == int(L.LIVER)).astype(np.uint8)
    out[truth > 0] = 2
    return out


def training_volume(seed: int, index: int, vendor: str, realism: str, matrix: int) -> Volume:
    sim = simulate_exam("ct", seed, index, phases=("arterial",), realism=realism, hard_cases="none", vendor=vendor,
                        matrix=matrix, annotations="none")
    hu = sim.volumes["arterial"][::-1]
    lab = target_labels(sim.labels, sim.truth)[::-1]
    spacing = (sim.grid.thickness, *sim.grid.pixel_spacing)
    x = RECIPE.model_input(np.ascontiguousarray(hu), spacing)
    y = resample(np.ascontiguousarray(lab).astype(np.float32), spacing, RECIPE.spacing_mm, x.shape,
                 linear=False).round().astype(np.uint8)
    return Volume(x, y, f"ct|{seed}|{index}|{vendor}|{realism}|{matrix}", np.flatnonzero(y == 2),
                  np.flatnonzero(y == 1))


def patch_batch(vols: list[Volume], rng: np.random.Generator, patch: tuple[int, int, int], batch: int,
                p_tumour: float = 0.6, p_liver: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """(batch, 1, *patch) inputs with intensity augmentation, (batch, 1, *patch) labels."""
    xs, ys = [], []
    for _ in range(batch):
        v = vols[int(rng.integers(len(vols)))]
        shape = v.x.shape
        u = rng.random()
        if u < p_tumour and len(v.tumour_idx):
            c = np.unravel_index(int(v.tumour_idx[int(rng.integers(len(v.tumour_idx)))]), shape)
        elif u < p_tumour + p_liver and len(v.liver_idx):
            c = np.unravel_index(int(v.liver_idx[int(rng.integers(len(v.liver_idx)))]), shape)
        else:
            c = tuple(int(rng.integers(n)) for n in shape)
        c = [int(ci) + int(rng.integers(-p // 4, p // 4 + 1)) for ci, p in zip(c, patch)]
        x, y = v.x, v.y
        pads = [(max(0, (p - n + 1) // 2), max(0, p - n - (p - n + 1) // 2)) for n, p in zip(shape, patch)]
        if any(a or b for a, b in pads):
            x, y = np.pad(x, pads), np.pad(y, pads)
            c = [ci + a for ci, (a, _b) in zip(c, pads)]
        start = [int(np.clip(ci - p // 2, 0, n - p)) for ci, p, n in zip(c, patch, x.shape)]
        sl = tuple(slice(s, s + p) for s, p in zip(start, patch))
        px = x[sl] * np.float32(rng.uniform(0.9, 1.1)) + np.float32(rng.uniform(-0.05, 0.05))
        px = px + rng.standard_normal(px.shape, dtype=np.float32) * np.float32(rng.uniform(0, 0.03))
        xs.append(px[None])
        ys.append(y[sl][None])
    return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.int64)
