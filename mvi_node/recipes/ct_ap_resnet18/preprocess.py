"""Seed 000 (Liu et al., Cancer Imaging 2021) pre-processing, torch-free.

HU from the Modality LUT (RescaleSlope/Intercept, PS3.3 C.11.1), a linear window
(level 70, width 200) to grey 0..255, then per tumour slice the square box around the
ROI, a centred crop of 0.8 x the box edge, resized to 256 x 256 and repeated to 3
channels. The paper's ROI is a circle drawn ~1 cm wider than the tumour; a tight mask
(SEG, RTSTRUCT, polygon) is widened by ``TIGHT_MASK_PAD_MM`` so both give the same box.
Crop and resize are one SimpleITK resampling in millimetres, so anisotropic pixels and
boxes reaching past the image edge (filled with grey 0) need no special case.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from mvi_node.common.frames import frame_pixels
from mvi_node.roi.automatic import axial_diameter_mm

WINDOW_LEVEL = 70.0
WINDOW_WIDTH = 200.0
CROP_MARGIN = 0.8
SIZE = 256
CHANNELS = 3
TIGHT_MASK_PAD_MM = 10.0  # seed 000: circle ~1 cm larger than the tumour


def hu(ds: Dataset) -> np.ndarray:
    """Hounsfield units of one CT image (any transfer syntax pydicom can decode): a
    decoded dataset, a header (pixels read from ``ds.filename``) or a frame of an
    Enhanced CT instance (``mvi_node.common.frames``; its Rescale from the functional groups)."""
    return np.asarray(apply_modality_lut(frame_pixels(ds), ds), dtype=np.float32)


def window(values: np.ndarray, level: float = WINDOW_LEVEL, width: float = WINDOW_WIDTH) -> np.ndarray:
    """Linear window to grey 0..255 (float32, not rounded: rounding is the network's loss)."""
    low = level - width / 2.0
    return np.clip((values - low) / width * 255.0, 0.0, 255.0).astype(np.float32)


@dataclass(frozen=True)
class CropBox:
    """Crop square on the source slice: centre (column, row) in image-relative pixel
    coordinates (PS3.3 C.10.5.1.2: 0.0 is the top-left corner of the top-left pixel),
    edge in columns, rows and mm (0.8 x the box edge). :func:`map_to_slice` puts a
    256 x 256 Grad-CAM back onto the slice through it.
    """

    center_col: float
    center_row: float
    edge_cols: float
    edge_rows: float
    edge_mm: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in self.__dict__.items()}


def square_box(mask2d: np.ndarray, spacing_rc: tuple[float, float], pad_mm: float) -> tuple[float, float, float]:
    """(centre row, centre col, edge mm) of the square that fits the ROI on one slice."""
    rows, cols = np.nonzero(mask2d)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    height = (r1 - r0) * spacing_rc[0]
    width = (c1 - c0) * spacing_rc[1]
    return (r0 + r1) / 2.0, (c0 + c1) / 2.0, float(max(height, width) + pad_mm)


def crop_resize(grey: np.ndarray, spacing_rc: tuple[float, float], center_rc: tuple[float, float],
                box_mm: float, margin: float = CROP_MARGIN, size: int = SIZE) -> tuple[np.ndarray, CropBox]:
    """Centred crop of ``margin`` x ``box_mm`` resized to ``size``^2 (linear), and its box."""
    edge = box_mm * margin
    img = sitk.GetImageFromArray(grey.astype(np.float32))
    img.SetSpacing((float(spacing_rc[1]), float(spacing_rc[0])))
    out_sp = edge / size
    # pixel i has its centre at i * spacing; the crop starts at the box corner
    cx = (center_rc[1] - 0.5) * spacing_rc[1]
    cy = (center_rc[0] - 0.5) * spacing_rc[0]
    origin = (cx - edge / 2 + out_sp / 2, cy - edge / 2 + out_sp / 2)
    res = sitk.Resample(img, [size, size], sitk.Transform(), sitk.sitkLinear, origin, (out_sp, out_sp),
                        img.GetDirection(), 0.0, sitk.sitkFloat32)
    box = CropBox(center_rc[1], center_rc[0], edge / spacing_rc[1], edge / spacing_rc[0], edge)
    return sitk.GetArrayFromImage(res), box


@dataclass
class Crops:
    """Network input of one series: grey crops (N, 256, 256) float32 0..255 and where they came from."""

    grey: np.ndarray
    slice_indices: list[int]
    boxes: list[CropBox]

    def images(self) -> np.ndarray:
        """(N, 3, 256, 256) float32 in 0..1, the ONNX ``image`` input."""
        x = (self.grey / 255.0).astype(np.float32)
        return np.repeat(x[:, None], CHANNELS, axis=1)


def crops_from_volume(hu_volume: np.ndarray, mask: np.ndarray, spacing_rc: tuple[float, float],
                      pad_mm: float = TIGHT_MASK_PAD_MM) -> Crops:
    """Every slice of ``mask`` (slices, rows, cols) that contains tumour -> one crop."""
    grey, idx, boxes = [], [], []
    for z in range(mask.shape[0]):
        if not mask[z].any():
            continue
        r, c, box_mm = square_box(mask[z], spacing_rc, pad_mm)
        g, box = crop_resize(window(hu_volume[z]), spacing_rc, (r, c), box_mm)
        grey.append(g)
        idx.append(z)
        boxes.append(box)
    arr = np.stack(grey) if grey else np.zeros((0, SIZE, SIZE), np.float32)
    return Crops(arr, idx, boxes)


def max_diameter_mm(mask: np.ndarray, spacing_rc: tuple[float, float]) -> float:
    """Largest in-plane Feret diameter (mm) over the slices, as MTD is read on axial images
    (the one measurement every ROI source uses: :func:`mvi_node.roi.automatic.axial_diameter_mm`)."""
    return axial_diameter_mm(mask, spacing_rc)


def map_to_slice(cam: np.ndarray, box: CropBox, shape_rc: tuple[int, int]) -> np.ndarray:
    """A (256, 256) map of one crop placed back on its slice grid (rows, cols), 0 outside.

    The inverse of :func:`crop_resize` (linear interpolation), for a report that
    overlays Grad-CAM on the original slice.
    """
    size = cam.shape[0]
    src = sitk.GetImageFromArray(np.asarray(cam, np.float32))
    src.SetSpacing((box.edge_cols / size, box.edge_rows / size))
    src.SetOrigin((box.center_col - box.edge_cols / 2 + box.edge_cols / size / 2,
                   box.center_row - box.edge_rows / 2 + box.edge_rows / size / 2))
    # target: pixel (r, c) centre at (c + 0.5, r + 0.5) in the same coordinates
    out = sitk.Resample(src, [int(shape_rc[1]), int(shape_rc[0])], sitk.Transform(), sitk.sitkLinear,
                        (0.5, 0.5), (1.0, 1.0), src.GetDirection(), 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)
