"""Seed 001's inputs from three sequences on one grid: the slices, the box, the crops.

Sun et al. 2022: per sequence, three consecutive slices through the tumour's maximum
diameter; the ROI rectangle around the tumour enlarged by 5-10 pixels on each side,
resized to 320 x 320. Here the sequences have been resampled onto the reference grid
(:func:`mvi_node.preprocess.mr.prepare_mr`), so one set of slice indices and one box
serve all three, and the ROI found on the reference series applies to every one.
Torch-free: the node serves this.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from mvi_node.roi.automatic import slice_diameters_mm

SIZE = 320
MARGIN_PX = 8  # the paper's 5-10 px
SLICES = 3


@dataclass(frozen=True)
class CropBox:
    """The crop rectangle on a reference slice: centre (column, row) in image-relative pixel
    coordinates (PS3.3 C.10.5.1.2: 0.0 is the top-left corner of the top-left pixel) and
    its edges in columns and rows (not square: the paper resizes the rectangle)."""

    center_col: float
    center_row: float
    edge_cols: float
    edge_rows: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in self.__dict__.items()}


def key_slices(mask: np.ndarray, spacing_rc: tuple[float, float]) -> tuple[int, ...]:
    """The slice of maximum tumour diameter and its two neighbours, in order; at the
    volume's first or last slice the three nearest inside it."""
    diam = slice_diameters_mm(mask, spacing_rc)
    if not diam.any():
        raise ValueError("the ROI is empty")
    z = int(np.argmax(diam))
    n = mask.shape[0]
    if n < SLICES:
        raise ValueError(f"the reference series has {n} slices, {SLICES} are needed")
    start = min(max(z - SLICES // 2, 0), n - SLICES)
    return tuple(range(start, start + SLICES))


def roi_box(mask: np.ndarray, slices: tuple[int, ...], margin_px: int = MARGIN_PX) -> CropBox:
    """The rectangle around the ROI on ``slices`` (their union), enlarged by ``margin_px``."""
    plane = mask[list(slices)].any(axis=0)
    rows, cols = np.nonzero(plane)
    r0, r1 = rows.min() - margin_px, rows.max() + 1 + margin_px
    c0, c1 = cols.min() - margin_px, cols.max() + 1 + margin_px
    return CropBox((c0 + c1) / 2.0, (r0 + r1) / 2.0, float(c1 - c0), float(r1 - r0))


def crop_resize(plane: np.ndarray, box: CropBox, size: int = SIZE) -> np.ndarray:
    """The box of one slice resized to ``size`` x ``size`` (linear; 0 outside the slice)."""
    img = sitk.GetImageFromArray(np.asarray(plane, np.float32))
    # pixel (r, c) has its centre at (c + 0.5, r + 0.5) in these coordinates
    img.SetOrigin((0.5, 0.5))
    sx, sy = box.edge_cols / size, box.edge_rows / size
    origin = (box.center_col - box.edge_cols / 2 + sx / 2, box.center_row - box.edge_rows / 2 + sy / 2)
    res = sitk.Resample(img, [size, size], sitk.Transform(), sitk.sitkLinear, origin, (sx, sy),
                        img.GetDirection(), 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(res)


def sequence_crops(volume: np.ndarray, slices: tuple[int, ...], box: CropBox) -> np.ndarray:
    """(3, 320, 320) float32 grey 0..255 of one sequence."""
    return np.stack([crop_resize(volume[z], box) for z in slices]).astype(np.float32)
