"""Grey values mapped to 0..255 per volume (seed 004: "grey values mapped to 0..255").

Robust percentiles inside the body mask, not min/max: one hot voxel (a vessel at peak
enhancement, a fat-suppression failure) would otherwise squeeze the liver into a few
grey levels, and the air outside the body would pull the low end to zero.
"""

from __future__ import annotations

import numpy as np

#: percentiles (of the values inside the body mask) mapped to 0 and 255
PERCENTILE_LOW = 0.5
PERCENTILE_HIGH = 99.5
GREY_MAX = 255.0


def robust_range(values: np.ndarray, mask: np.ndarray | None = None,
                 low: float = PERCENTILE_LOW, high: float = PERCENTILE_HIGH) -> tuple[float, float]:
    """(lo, hi) percentiles of ``values`` inside ``mask`` (everywhere when empty or None)."""
    inside = values[mask.astype(bool)] if mask is not None and mask.any() else values.ravel()
    lo, hi = np.percentile(inside, [low, high])
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        raise ValueError("the volume has no contrast inside the body (constant values)")
    return float(lo), float(hi)


def to_grey(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear map lo -> 0, hi -> 255, clipped; float32."""
    out = (np.asarray(values, np.float32) - np.float32(lo)) * np.float32(GREY_MAX / (hi - lo))
    return np.clip(out, 0.0, GREY_MAX, out=out)
