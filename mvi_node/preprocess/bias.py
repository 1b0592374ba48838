"""N4 bias-field correction (Tustison et al., IEEE TMI 2010), as seed 004 prescribes.

The field is smooth, so it is estimated on a copy shrunk to about ``N4_SHRINK_MM``
voxels (tens of thousands of voxels instead of millions: the fit costs per voxel and
iteration) inside an Otsu body mask, and the log field the fit describes (a B-spline) is
evaluated at full resolution with ``GetLogBiasFieldAsImage``: corrected = image / exp(log field).
"""

from __future__ import annotations

import SimpleITK as sitk

#: target voxel size of the shrunk copy (mm); factors are rounded per axis, at least 1
N4_SHRINK_MM = 12.0
#: iterations per fitting level; each level doubles the B-spline control grid
N4_ITERATIONS = (50, 50, 50)
N4_CONVERGENCE = 1e-3
N4_CONTROL_POINTS = 4
N4_HISTOGRAM_BINS = 200
#: bins of the histogram Otsu's threshold is taken from
OTSU_BINS = 200


def body_mask(image: sitk.Image) -> sitk.Image:
    """UInt8 1 inside the body: Otsu's threshold separates signal from the dark air."""
    return sitk.OtsuThreshold(image, 0, 1, OTSU_BINS)


def shrink_factors(image: sitk.Image, target_mm: float = N4_SHRINK_MM) -> list[int]:
    return [max(1, int(round(target_mm / s))) for s in image.GetSpacing()]


def n4_correct(image: sitk.Image, mask: sitk.Image | None = None) -> tuple[sitk.Image, sitk.Image, dict]:
    """(corrected float32 image, body mask, what was done).

    ``mask`` defaults to :func:`body_mask` of ``image``. The third item holds the shrink
    factors, the iterations run and the final convergence measure, for the record.
    """
    image = sitk.Cast(image, sitk.sitkFloat32)
    mask = body_mask(image) if mask is None else mask
    factors = shrink_factors(image)
    small, small_mask = sitk.Shrink(image, factors), sitk.Shrink(mask, factors)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations(list(N4_ITERATIONS))
    n4.SetConvergenceThreshold(N4_CONVERGENCE)
    n4.SetNumberOfControlPoints([N4_CONTROL_POINTS] * 3)
    n4.SetNumberOfHistogramBins(N4_HISTOGRAM_BINS)
    n4.Execute(small, small_mask)
    log_field = n4.GetLogBiasFieldAsImage(image)
    corrected = sitk.Cast(image / sitk.Exp(log_field), sitk.sitkFloat32)
    info = {"shrink": factors, "iterations_last_level": int(n4.GetElapsedIterations()),
            "convergence": float(n4.GetCurrentConvergenceMeasurement())}
    return corrected, mask, info


def log_bias_field(image: sitk.Image, corrected: sitk.Image) -> sitk.Image:
    """The log field N4 removed, recovered from its input and output (for checks)."""
    eps = 1e-6
    return sitk.Log(sitk.Cast(image, sitk.sitkFloat32) + eps) - sitk.Log(corrected + eps)
