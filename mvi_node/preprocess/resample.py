"""Resampling onto a reference grid in patient coordinates (never by slice number).

A voxel of the reference grid takes the value of the moving image at the physical point
``transform(x)`` (SimpleITK's convention: the transform maps reference points to moving
points; identity when the scanner geometry is trusted). Linear interpolation; points
outside the moving image's field of view get ``default`` (0, the grey value of air).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

INTERPOLATOR = "linear"


def resample_onto(moving: sitk.Image, reference: sitk.Image, transform: sitk.Transform | None = None,
                  default: float = 0.0) -> sitk.Image:
    return sitk.Resample(moving, reference, transform or sitk.Transform(), sitk.sitkLinear, default,
                         sitk.sitkFloat32)


def coverage_onto(moving: sitk.Image, reference: sitk.Image, transform: sitk.Transform | None = None) -> np.ndarray:
    """Bool (slices, rows, cols) of the reference voxels that lie inside the moving image."""
    ones = sitk.Image(moving.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(moving)
    inside = sitk.Resample(ones, reference, transform or sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                           sitk.sitkUInt8)
    return sitk.GetArrayFromImage(inside).astype(bool)


def image_like(values: np.ndarray, grid: sitk.Image) -> sitk.Image:
    """``values`` (slices, rows, cols) as an image with ``grid``'s geometry."""
    image = sitk.GetImageFromArray(np.asarray(values, np.float32))
    image.CopyInformation(grid)
    return image
