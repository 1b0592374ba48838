"""Training volumes and random patches for the segmentation recipes (numpy only).

A :class:`Volume` holds a training exam on its model grid: the input channels (the target
series first, then the other phases or sequences, registered onto it) and the labels 0
background, 1 liver, 2 tumour. :func:`patch_batch` draws patches centred on tumour, liver
or anywhere, with intensity augmentation; each extra channel is read a voxel or so off
(misregistration between breath holds) and blanked to 0 with ``p_blank``, what serving
feeds for a phase or sequence the exam lacks.

The MR segmenter (``liver_tumor_seg_mr``) uses it; it is the CT recipe's sampler
(``liver_tumor_seg.data.patch_batch``, lesion-balanced sampling included) made shareable,
so no recipe imports another.

:class:`HardLesions` is online hard-lesion mining: the lesions the network currently misses
centre tumour patches more often than those it already finds (liver_tumor_seg 0.6.0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Volume:
    x: np.ndarray  # (channels, z, y, x) float32 0..1: the target series first, then the others
    y: np.ndarray  # (z, y, x) uint8 0/1/2
    key: str
    tumour_idx: np.ndarray  # flat indices of tumour voxels (patch centres)
    liver_idx: np.ndarray
    #: flat indices of each lesion's voxels (26-connected tumour components)
    lesion_idx: tuple[np.ndarray, ...] = ()


def lesion_components(y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Flat voxel indices of each 26-connected tumour component of a label map."""
    from scipy import ndimage

    comp, n = ndimage.label(y == 2, structure=np.ones((3, 3, 3), bool))
    flat = comp.ravel()
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(1, n + 2))
    return tuple(order[bounds[k]:bounds[k + 1]] for k in range(n))


def volume_of(x: np.ndarray, y: np.ndarray, key: str) -> Volume:
    return Volume(np.asarray(x, np.float32), np.asarray(y, np.uint8), key, np.flatnonzero(y == 2),
                  np.flatnonzero(y == 1), lesion_components(y))


class HardLesions:
    """Each training lesion's chance to centre a tumour patch, from how much of it the network missed.

    Why: three models trained on different data, steps and mixes missed the same faint lesions
    (bench/RESULTS.md, #11); uniform lesion sampling shows them as rarely as the lesions the
    network already finds. A lesion's weight is ``floor`` plus a running mean of the fraction
    of its patch's tumour voxels the network's last forward passes did not call tumour (0.5
    before it was seen), so a lesion that is never found is drawn at most ``(floor + 1) /
    floor`` times as often as one that is always found, and an invisible lesion (label noise
    for the network) cannot take over the batches."""

    def __init__(self, vols: list[Volume], floor: float = 0.25, keep: float = 0.7) -> None:
        self.keys = [(vi, li) for vi, v in enumerate(vols) for li in range(len(v.lesion_idx))]
        self.miss = np.full(len(self.keys), 0.5)
        self.floor, self.keep = float(floor), float(keep)
        #: per patch of the last :func:`patch_batch`: the index into ``keys`` it was centred on, else -1
        self.last: list[int] = []

    def draw(self, rng: np.random.Generator) -> int:
        w = self.floor + self.miss
        return int(rng.choice(len(w), p=w / w.sum()))

    def update(self, labels: np.ndarray, predicted: np.ndarray) -> None:
        """Labels and predicted classes (batch, 1 or none, *patch) of the last batch drawn."""
        labels, predicted = labels.reshape(len(labels), -1), predicted.reshape(len(predicted), -1)
        for b, k in enumerate(self.last):
            truth = labels[b] == 2
            if k < 0 or not truth.any():
                continue
            missed = 1.0 - float((predicted[b][truth] == 2).mean())
            self.miss[k] = self.keep * self.miss[k] + (1.0 - self.keep) * missed


def patch_batch(vols: list[Volume], rng: np.random.Generator, patch: tuple[int, int, int], batch: int,
                p_tumour: float = 0.6, p_liver: float = 0.25, p_blank: float = 0.0,
                shift: tuple[int, int, int] = (0, 0, 0),
                lesion_balanced: bool = False, hard: HardLesions | None = None,
                fainter: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(batch, channels, *patch) inputs with intensity augmentation, (batch, 1, *patch) labels.

    Each extra channel (after the first) is read ``shift`` voxels or fewer off (z, y, x),
    drawn per patch, and blanked to 0 with probability ``p_blank``. ``lesion_balanced``: a
    tumour patch is centred on a voxel of a lesion drawn uniformly among the volume's
    lesions (a 15 mm satellite as often as a 50 mm lesion). A channel that is already all
    zeros (the exam lacked it) stays exactly zero. ``hard``: a tumour patch is centred on a
    lesion drawn by :class:`HardLesions` weight among all volumes' lesions; ``hard.last`` says
    which, for :meth:`HardLesions.update` after the forward pass. ``fainter`` (p, lowest):
    with probability p a patch's lesions are made fainter, each channel's tumour voxels moved
    towards the median of the patch's liver voxels by a factor drawn from U(lowest, 1)
    (:func:`fainter_lesions`)."""
    xs, ys = [], []
    picks: list[int] = []
    for _ in range(batch):
        v = vols[int(rng.integers(len(vols)))]
        u = rng.random()
        picks.append(-1)
        if hard is not None and hard.keys and u < p_tumour:
            picks[-1] = hard.draw(rng)
            vi, li = hard.keys[picks[-1]]
            v = vols[vi]
            pool = v.lesion_idx[li]
            c = np.unravel_index(int(pool[int(rng.integers(len(pool)))]), v.y.shape)
        elif u < p_tumour and len(v.tumour_idx):
            pool = v.tumour_idx
            if lesion_balanced and v.lesion_idx:
                pool = v.lesion_idx[int(rng.integers(len(v.lesion_idx)))]
            c = np.unravel_index(int(pool[int(rng.integers(len(pool)))]), v.y.shape)
        elif u < p_tumour + p_liver and len(v.liver_idx):
            c = np.unravel_index(int(v.liver_idx[int(rng.integers(len(v.liver_idx)))]), v.y.shape)
        else:
            c = tuple(int(rng.integers(n)) for n in v.y.shape)
        shape = v.y.shape
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
        if fainter is not None and rng.random() < fainter[0]:
            px = fainter_lesions(px, y[sl], float(rng.uniform(fainter[1], 1.0)))
        blank = ~px.reshape(len(px), -1).any(axis=1)
        px = px * np.float32(rng.uniform(0.9, 1.1)) + np.float32(rng.uniform(-0.05, 0.05))
        px = px + rng.standard_normal(px.shape, dtype=np.float32) * np.float32(rng.uniform(0, 0.03))
        px[blank] = 0.0  # a missing phase stays exactly what serving feeds
        xs.append(px)
        ys.append(y[sl][None])
    if hard is not None:
        hard.last = picks
    return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.int64)


def fainter_lesions(px: np.ndarray, lab: np.ndarray, k: float) -> np.ndarray:
    """``px`` (channels, *patch) with each channel's tumour voxels at ``k`` times their
    difference from the median of the patch's liver voxels (unchanged without liver or
    tumour in the patch, and for an all-zero, missing channel).

    Why (#11): the models missed lesions of -30 HU portal contrast that they find at -45 to
    -60 HU (bench/RESULTS.md); the generator draws few lesions that faint, so training shows
    them fainter than drawn. The truth is exact, so the outline stays right."""
    tumour, liver = lab == 2, lab == 1
    if not tumour.any() or not liver.any():
        return px
    out = px.copy()
    for c in range(len(out)):
        if not out[c].any():
            continue
        ref = np.float32(np.median(out[c][liver]))
        out[c][tumour] = ref + (out[c][tumour] - ref) * np.float32(k)
    return out
