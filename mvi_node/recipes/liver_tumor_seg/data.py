"""Training volumes from in-memory synthetic exams, on the model grid the node serves.

Each exam is simulated (the phases the model reads: the arterial phase, and from 0.2.0
on the portal venous phase as a second channel), put in the slice order the node reads
a series in (ascending along the slice normal, so feet first), resampled and windowed by
the recipe's own :meth:`~mvi_node.infer.segmentation.SegmentationRecipe.model_input`,
and its truth made into labels 0 background, 1 liver, 2 tumour (nearest neighbour).
The generator renders every phase on one grid, so the channels are registered exactly;
:func:`patch_batch` shifts the extra channels by a voxel or so and sometimes blanks them,
as serving sees them (a phase registered through patient coordinates after another
breath hold, or no such phase in the exam).
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
    x: np.ndarray  # (channels, z, y, x) float32 0..1: arterial first, then the extra phases
    y: np.ndarray  # (z, y, x) uint8 0/1/2
    key: str
    tumour_idx: np.ndarray  # flat indices of tumour voxels (patch centres)
    liver_idx: np.ndarray
    #: flat indices of each lesion's voxels (26-connected tumour components): lesion-balanced
    #: sampling picks a lesion first, so a 15 mm satellite is drawn as often as a 50 mm lesion
    #: (voxel-weighted sampling drew it ~30x less often)
    lesion_idx: tuple[np.ndarray, ...] = ()


def target_labels(labels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    out = (labels == int(L.LIVER)).astype(np.uint8)
    out[truth > 0] = 2
    return out


#: generator phase of each channel role the recipe can read
PHASE_OF_ROLE = {"ct_arterial": "arterial", "ct_portal_venous": "portal", "ct_delayed": "delayed"}


def training_volume(seed: int, index: int, vendor: str, realism: str, matrix: int, channels: int = 1) -> Volume:
    phases = tuple(PHASE_OF_ROLE[r] for r in RECIPE.channel_roles[:channels])
    sim = simulate_exam("ct", seed, index, phases=phases, realism=realism, hard_cases="none", vendor=vendor,
                        matrix=matrix, annotations="none")
    lab = target_labels(sim.labels, sim.truth)[::-1]
    spacing = (sim.grid.thickness, *sim.grid.pixel_spacing)
    x = np.stack([RECIPE.model_input(np.ascontiguousarray(sim.volumes[p][::-1]), spacing) for p in phases])
    y = resample(np.ascontiguousarray(lab).astype(np.float32), spacing, RECIPE.spacing_mm, x.shape[1:],
                 linear=False).round().astype(np.uint8)
    return Volume(x, y, f"ct|{seed}|{index}|{vendor}|{realism}|{matrix}", np.flatnonzero(y == 2),
                  np.flatnonzero(y == 1), lesion_components(y))


def lesion_components(y: np.ndarray) -> tuple[np.ndarray, ...]:
    from scipy import ndimage

    comp, n = ndimage.label(y == 2, structure=np.ones((3, 3, 3), bool))
    flat = comp.ravel()
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(1, n + 2))
    return tuple(order[bounds[k]:bounds[k + 1]] for k in range(n))


def patch_batch(vols: list[Volume], rng: np.random.Generator, patch: tuple[int, int, int], batch: int,
                p_tumour: float = 0.6, p_liver: float = 0.25, p_blank: float = 0.0,
                shift: tuple[int, int, int] = (0, 0, 0),
                lesion_balanced: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(batch, channels, *patch) inputs with intensity augmentation, (batch, 1, *patch) labels.

    Each extra channel (after the first) is read ``shift`` voxels or fewer off (z, y, x),
    drawn per patch, and blanked to 0 (what serving feeds for a missing phase) with
    probability ``p_blank``. ``lesion_balanced``: a tumour patch is centred on a voxel of a
    lesion drawn uniformly among the volume's lesions, not on a tumour voxel drawn uniformly."""
    xs, ys = [], []
    for _ in range(batch):
        v = vols[int(rng.integers(len(vols)))]
        shape = v.y.shape
        u = rng.random()
        if u < p_tumour and len(v.tumour_idx):
            pool = v.tumour_idx
            if lesion_balanced and v.lesion_idx:
                pool = v.lesion_idx[int(rng.integers(len(v.lesion_idx)))]
            c = np.unravel_index(int(pool[int(rng.integers(len(pool)))]), shape)
        elif u < p_tumour + p_liver and len(v.liver_idx):
            c = np.unravel_index(int(v.liver_idx[int(rng.integers(len(v.liver_idx)))]), shape)
        else:
            c = tuple(int(rng.integers(n)) for n in shape)
        c = [int(ci) + int(rng.integers(-p // 4, p // 4 + 1)) for ci, p in zip(c, patch)]
        x, y = v.x, v.y
        pads = [(max(0, (p - n + 1) // 2), max(0, p - n - (p - n + 1) // 2)) for n, p in zip(shape, patch)]
        if any(a or b for a, b in pads):
            x, y = np.pad(x, [(0, 0), *pads]), np.pad(y, pads)
            c = [ci + a for ci, (a, _b) in zip(c, pads)]
        start = [int(np.clip(ci - p // 2, 0, n - p)) for ci, p, n in zip(c, patch, y.shape)]
        sl = tuple(slice(s, s + p) for s, p in zip(start, patch))
        chans = [x[0][sl]]
        for k in range(1, x.shape[0]):
            if rng.random() < p_blank:
                chans.append(np.zeros(patch, np.float32))
                continue
            off = [int(np.clip(s + rng.integers(-m, m + 1), 0, n - p)) for s, m, p, n in zip(start, shift, patch, y.shape)]
            chans.append(x[k][tuple(slice(o, o + p) for o, p in zip(off, patch))])
        px = np.stack(chans)
        blank = ~px.reshape(len(px), -1).any(axis=1)
        px = px * np.float32(rng.uniform(0.9, 1.1)) + np.float32(rng.uniform(-0.05, 0.05))
        px = px + rng.standard_normal(px.shape, dtype=np.float32) * np.float32(rng.uniform(0, 0.03))
        px[blank] = 0.0  # a missing phase stays exactly what serving feeds
        xs.append(px)
        ys.append(y[sl][None])
    return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.int64)
