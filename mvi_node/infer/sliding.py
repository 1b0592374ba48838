"""Sliding-window inference in numpy: tiles with overlap, Gaussian or mean blending.

No torch: the tile function is anything that maps a (1, C, z, y, x) float32 array to
(1, K, z, y, x) scores (an ONNX Runtime session through the engine's ModelRunner).
Tile positions and padding follow MONAI's ``sliding_window_inference`` (interval =
patch x (1 - overlap), the last tile flush with the volume's end; a volume smaller than
the patch is padded symmetrically with ``pad_value``), so a graph exported from a MONAI
network gives the same result as MONAI's own loop on the torch network.

When a tile does not fit in memory (MemoryError, or ONNX Runtime's "Failed to allocate"),
the whole window is run again with tiles halved in-plane, down to ``min_patch``: a
large series is slower, never a crashed job.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

TileFn = Callable[[np.ndarray], np.ndarray]
_OOM = re.compile(r"failed to allocate|out of memory|bad_alloc", re.I)


def tile_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices along one axis (``size`` >= ``patch``), MONAI's scheme."""
    if size <= patch:
        return [0]
    interval = max(1, int(patch * (1.0 - overlap)))
    n = int(math.ceil((size - patch) / interval)) + 1
    return sorted({min(k * interval, size - patch) for k in range(n)})


def importance_map(patch: Sequence[int], mode: str = "gaussian", sigma_scale: float = 0.125) -> np.ndarray:
    """Blending weights of one tile: a separable Gaussian centred on the tile (sigma =
    ``sigma_scale`` x the patch edge, floored at 1e-3), as MONAI's
    ``compute_importance_map``, or all ones (``"constant"``)."""
    if mode == "constant":
        return np.ones(tuple(patch), np.float32)
    if mode != "gaussian":
        raise ValueError(f"blend mode must be gaussian or constant, not {mode!r}")
    w = np.ones((), np.float32)
    for n in patch:
        x = np.arange(n, dtype=np.float32) - np.float32((n - 1) / 2.0)
        sigma = np.float32(n * sigma_scale)
        w = np.multiply.outer(w, np.exp(x ** 2 / (-2 * sigma ** 2)).astype(np.float32))
    return np.maximum(w, max(float(w.min()), 1e-3)).astype(np.float32)


def _pad(volume: np.ndarray, patch: Sequence[int], value: float) -> tuple[np.ndarray, list[tuple[int, int]]]:
    pads = [(0, 0)] * (volume.ndim - 3)
    for size, p in zip(volume.shape[-3:], patch):
        diff = max(p - size, 0)
        pads.append((diff // 2, diff - diff // 2))
    if not any(a or b for a, b in pads):
        return volume, pads
    return np.pad(volume, pads, mode="constant", constant_values=value), pads


def _window(volume: np.ndarray, tile: TileFn, patch: Sequence[int], overlap: float, mode: str,
            pad_value: float) -> np.ndarray:
    padded, pads = _pad(volume, patch, pad_value)
    shape = padded.shape[-3:]
    weight = importance_map(patch, mode)
    out: np.ndarray | None = None
    norm = np.zeros(shape, np.float32)
    starts = [tile_starts(s, p, overlap) for s, p in zip(shape, patch)]
    for z in starts[0]:
        for y in starts[1]:
            for x in starts[2]:
                sl = (slice(z, z + patch[0]), slice(y, y + patch[1]), slice(x, x + patch[2]))
                scores = np.asarray(tile(np.ascontiguousarray(padded[(None, Ellipsis, *sl)], np.float32)))[0]
                if out is None:
                    out = np.zeros((scores.shape[0], *shape), np.float32)
                out[(slice(None), *sl)] += scores * weight
                norm[sl] += weight
    assert out is not None
    out /= norm
    crop = tuple(slice(a, s - b) for (a, b), s in zip(pads[-3:], shape))
    return out[(slice(None), *crop)]


def _halved(patch: Sequence[int], multiple: Sequence[int], minimum: Sequence[int]) -> tuple[int, ...] | None:
    """The next smaller tile: in-plane edges halved (kept multiples of the network's stride)."""
    new = list(patch)
    for i in (1, 2):
        half = max(minimum[i], (patch[i] // 2) // multiple[i] * multiple[i])
        new[i] = half
    return tuple(new) if tuple(new) != tuple(patch) else None


def sliding_window(volume: np.ndarray, tile: TileFn, patch: Sequence[int], overlap: float = 0.25,
                   mode: str = "gaussian", pad_value: float = 0.0, multiple: Sequence[int] = (1, 1, 1),
                   min_patch: Sequence[int] | None = None) -> tuple[np.ndarray, dict]:
    """Scores (K, z, y, x) of ``volume`` ((C,) z, y, x) and what was run.

    Returns ``(scores, info)`` with ``info`` = patch used, overlap, blend mode, number of
    tiles per axis and the smaller tiles tried after running out of memory.
    """
    vol = np.asarray(volume, np.float32)
    if vol.ndim == 3:
        vol = vol[None]
    patch = tuple(int(p) for p in patch)
    minimum = tuple(min_patch) if min_patch is not None else (patch[0], max(multiple[1], patch[1] // 4),
                                                               max(multiple[2], patch[2] // 4))
    tried: list[tuple[int, ...]] = []
    while True:
        try:
            scores = _window(vol, tile, patch, overlap, mode, pad_value)
            shape = [max(s, p) for s, p in zip(vol.shape[-3:], patch)]
            return scores, {"patch": list(patch), "overlap": overlap, "blend": mode,
                            "tiles": [len(tile_starts(s, p, overlap)) for s, p in zip(shape, patch)],
                            "fallbacks": [list(t) for t in tried]}
        except Exception as exc:  # noqa: BLE001 - only memory exhaustion is retried, the rest re-raised
            if not (isinstance(exc, MemoryError) or _OOM.search(str(exc))):
                raise
            smaller = _halved(patch, multiple, minimum)
            if smaller is None:
                raise MemoryError(f"sliding window out of memory even with tiles {list(patch)}") from exc
            log.warning("sliding window: out of memory with tiles %s, retrying with %s", list(patch), list(smaller))
            tried.append(patch)
            patch = smaller
