"""One image series -> a float32 ``sitk.Image`` in patient coordinates.

Slices are sorted along the plane normal by :func:`mvi_node.roi.geometry.series_geometry`
(PS3.3 C.7.6.2), so the volume's z axis is the normal and its grid is exactly
``SeriesGeometry.reference()``. Stored values go through the Modality LUT's linear form
(RescaleSlope/RescaleIntercept, PS3.3 C.11.1, or a frame's Pixel Value Transformation;
MR images usually carry neither, which means identity). A series that is not one regular stack of parallel planes is refused,
never guessed at: two images at one position (DWI b-values, an echo pair), tilted
planes, or gaps that vary.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset

from mvi_node.common.frames import frame_datasets, frame_number, frame_pixels
from mvi_node.roi.geometry import SeriesGeometry, series_geometry

#: how far (mm) a slice may sit from the regular stack, and (cosine) how far a plane may tilt
POSITION_TOLERANCE_MM = 0.05
ORIENTATION_TOLERANCE = 1e-3


class VolumeError(ValueError):
    """The series cannot be read as one regular volume (message names no patient)."""


def read_pixels(ds: Dataset) -> np.ndarray:
    """Stored pixel values of one image or frame view (the one place pixels are read).

    Datasets indexed from headers only (no PixelData) are read from ``ds.filename``;
    a frame of an Enhanced multi-frame instance from its parent's decoded frames.
    """
    if "PixelData" not in ds and not getattr(ds, "filename", None) and frame_number(ds) is None:
        raise VolumeError("image without pixel data and without a file to read them from")
    return frame_pixels(ds)


def _rescale(ds: Dataset) -> tuple[float, float]:
    slope = ds.get("RescaleSlope")
    intercept = ds.get("RescaleIntercept")
    return (float(slope) if slope not in (None, "") else 1.0,
            float(intercept) if intercept not in (None, "") else 0.0)


def _check_stack(geo: SeriesGeometry) -> None:
    for ds in geo.datasets:
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        if np.abs(iop - geo.orientation).max() > ORIENTATION_TOLERANCE:
            raise VolumeError("images of the series lie in differently oriented planes")
        if (int(ds.Rows), int(ds.Columns)) != geo.shape[1:]:
            raise VolumeError("images of the series differ in size")
    if len(geo.datasets) < 2:
        raise VolumeError("a single image is not a volume")
    depth = geo.positions @ geo.normal
    gaps = np.diff(depth)
    if gaps.min() < POSITION_TOLERANCE_MM:
        raise VolumeError("more than one image at one slice position (several b-values, echoes or phases)")
    if gaps.max() - gaps.min() > max(POSITION_TOLERANCE_MM, 0.01 * gaps.mean()):
        raise VolumeError("slice gaps vary along the series")
    # every slice on the line through the first along the normal: no in-plane shifts
    offsets = geo.positions - geo.positions[0] - np.outer(depth - depth[0], geo.normal)
    if np.abs(offsets).max() > max(POSITION_TOLERANCE_MM, 0.05 * min(geo.spacing_rc)):
        raise VolumeError("slices are shifted in plane (a sheared stack)")


def load_volume(datasets: Sequence[Dataset]) -> tuple[sitk.Image, SeriesGeometry]:
    """The series as float32 values after RescaleSlope/Intercept, on its own grid.

    ``datasets`` are classic images, frame views, or whole Enhanced multi-frame
    instances (split into their frames, PS3.3 C.7.6.16).
    """
    views = [view for ds in datasets for view in frame_datasets(ds)]
    try:
        geo = series_geometry(views)
    except ValueError as exc:
        raise VolumeError(str(exc)) from exc
    _check_stack(geo)
    values = np.empty(geo.shape, np.float32)
    for z, ds in enumerate(geo.datasets):
        pixels = read_pixels(ds)
        if pixels.shape != geo.shape[1:]:
            raise VolumeError("pixel data does not match Rows/Columns")
        slope, intercept = _rescale(ds)
        values[z] = pixels.astype(np.float32) * slope + intercept
    image = sitk.GetImageFromArray(values)
    image.CopyInformation(geo.reference())
    return image, geo
