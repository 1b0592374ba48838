"""Rigid registration of one sequence to the reference, with a quality check.

Method (seed 002 registers every sequence rigidly to a reference): Euler3D transform
(rotation about the reference volume's centre, then translation), Mattes mutual
information (the sequences differ in contrast, so no intensity identity is assumed),
sampled at random in the reference body mask with a fixed seed (same input, same
answer), regular-step gradient descent, two resolution levels (about 6 and 3 mm voxels
in plane, so the cost hardly depends on the matrix). The transform starts at
identity: the scanner's patient coordinates are the best first guess for one patient.

Quality measure: normalised mutual information NMI = (H(A) + H(B)) / H(A, B) of the grey
values (0..255, 32 bins) inside the reference body mask where the moving sequence has
data, before (scanner geometry) and after. Measured on a synthetic exam after N4 and
the 0..255 map, against the portal venous phase: the other T1 phases 1.18-1.31 where
aligned (1.09-1.13 when shifted 7 mm and turned 4 deg), T2 1.09, the same phases of
another phantom patient 1.07-1.11, an unrelated smooth-noise volume 1.00. ``MIN_NMI``
therefore separates an image with nothing in common with the reference (a failed or
meaningless registration) from any real sequence of the abdomen; it cannot tell a
similar-looking other patient (selection keeps to one exam). A registration passes when
NMI after >= ``MIN_NMI``, it is not worse than before by more than ``MAX_NMI_LOSS``, at
least ``MIN_OVERLAP`` of the reference body lies in the moving volume, and the motion is
plausible for one patient between sequences (``MAX_ROTATION_DEG``, ``MAX_TRANSLATION_MM``).
A failed check is not returned as a usable result: :func:`mvi_node.preprocess.mr.prepare_mr`
raises ``MRPreprocessError`` carrying the ``RegistrationResult`` (``passed=False``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk

from mvi_node.preprocess.resample import coverage_onto, resample_onto

METRIC = "mattes_mutual_information"
METRIC_BINS = 32
SAMPLING = 0.05  # fraction of the masked reference voxels per iteration
SAMPLING_SEED = 20240
#: ITK's default smooths the gradient of the whole image at every level; central
#: differences at the sampled points give the same optimum for a fraction of the time
GRADIENT_FILTERS = False
OPTIMISER = "regular_step_gradient_descent"
LEARNING_RATE = 2.0
MIN_STEP = 1e-3
ITERATIONS = 100
RELAXATION = 0.5
#: the finest level works at about this in-plane voxel size (mm); the coarse one at twice it
FINEST_LEVEL_MM = 3.0
SMOOTHING_VOXELS = (2.0, 1.0)

QUALITY_MEASURE = "normalised_mutual_information"
QUALITY_BINS = 32
MIN_NMI = 1.05
MAX_NMI_LOSS = 0.01
MIN_OVERLAP = 0.5
MAX_ROTATION_DEG = 15.0
MAX_TRANSLATION_MM = 60.0


@dataclass(frozen=True)
class RegistrationResult:
    """What registration did for one role. ``metric_*`` are NMI values (see module)."""

    performed: bool
    translation_mm: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]  # Euler angles about x, y, z of the reference axes
    metric_before: float
    metric_after: float
    passed: bool
    reason: str
    overlap: float = 1.0  # fraction of the reference body inside the moving volume

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def nmi(fixed: np.ndarray, moving: np.ndarray, mask: np.ndarray) -> float:
    """Normalised mutual information of two 0..255 arrays inside ``mask`` (1.0: independent)."""
    a, b = fixed[mask], moving[mask]
    if a.size < 100:
        return float("nan")
    joint, _, _ = np.histogram2d(a, b, bins=QUALITY_BINS, range=[[0, 256], [0, 256]])
    p = joint / joint.sum()

    def entropy(q: np.ndarray) -> float:
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    h_joint = entropy(p)
    return (entropy(p.sum(0)) + entropy(p.sum(1))) / h_joint if h_joint > 0 else float("nan")


def quality(fixed: sitk.Image, fixed_mask: np.ndarray, moving: sitk.Image,
            transform: sitk.Transform | None = None) -> tuple[float, float, np.ndarray]:
    """(NMI, overlap, moving resampled onto the fixed grid as an array)."""
    moved = sitk.GetArrayFromImage(resample_onto(moving, fixed, transform))
    inside = fixed_mask & coverage_onto(moving, fixed, transform)
    overlap = float(inside.sum() / max(1, fixed_mask.sum()))
    return nmi(sitk.GetArrayFromImage(fixed), moved, inside), overlap, moved


def centre_of(image: sitk.Image) -> tuple[float, float, float]:
    return image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in image.GetSize()])


def shrink_factors(fixed: sitk.Image) -> list[int]:
    finest = max(1, int(round(FINEST_LEVEL_MM / min(fixed.GetSpacing()[:2]))))
    return [2 * finest, finest]


def rigid(fixed: sitk.Image, moving: sitk.Image, fixed_mask: sitk.Image) -> sitk.Euler3DTransform:
    """The Euler3D transform mapping reference points to moving points (grey images)."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(METRIC_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(SAMPLING, SAMPLING_SEED)
    method.SetMetricFixedMask(fixed_mask)
    if not GRADIENT_FILTERS:
        method.SetMetricUseFixedImageGradientFilter(False)
        method.SetMetricUseMovingImageGradientFilter(False)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(LEARNING_RATE, MIN_STEP, ITERATIONS, RELAXATION)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(shrink_factors(fixed))
    method.SetSmoothingSigmasPerLevel(list(SMOOTHING_VOXELS))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    initial = sitk.Euler3DTransform()
    initial.SetCenter(centre_of(fixed))
    method.SetInitialTransform(initial, inPlace=True)
    method.Execute(fixed, moving)
    return initial


def register(fixed: sitk.Image, fixed_mask: sitk.Image, moving: sitk.Image,
             ) -> tuple[sitk.Euler3DTransform, RegistrationResult]:
    """Register ``moving`` to ``fixed`` (both grey 0..255) and judge the result."""
    mask = sitk.GetArrayFromImage(fixed_mask).astype(bool)
    before, _, _ = quality(fixed, mask, moving)
    try:
        transform = rigid(fixed, moving, fixed_mask)
    except RuntimeError as exc:  # ITK: too few samples in the mask, a degenerate image
        first_line = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else "ITK error"
        return sitk.Euler3DTransform(), RegistrationResult(
            True, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), before, float("nan"), False,
            f"registration did not run to an end: {first_line}", 0.0)
    after, overlap, _ = quality(fixed, mask, moving, transform)
    rotation = tuple(float(np.degrees(a)) for a in (transform.GetAngleX(), transform.GetAngleY(),
                                                    transform.GetAngleZ()))
    translation = tuple(float(t) for t in transform.GetTranslation())
    passed, reason = judge(before, after, overlap, rotation, translation)
    return transform, RegistrationResult(True, translation, rotation, before, after, passed, reason, overlap)


def judge(before: float, after: float, overlap: float, rotation: tuple[float, ...],
          translation: tuple[float, ...]) -> tuple[bool, str]:
    """(passed, a sentence saying why) for the thresholds in the module docstring."""
    measured = f"NMI {before:.3f} -> {after:.3f}"
    if not np.isfinite(after) or after < MIN_NMI:
        return False, f"{measured}: below {MIN_NMI:.2f} after registration, the sequence does not match the reference"
    if after < before - MAX_NMI_LOSS:
        return False, f"{measured}: registration made the match worse"
    if overlap < MIN_OVERLAP:
        return False, f"{measured}: only {overlap:.0%} of the reference body lies inside the sequence"
    if max(abs(a) for a in rotation) > MAX_ROTATION_DEG:
        return False, f"{measured}: rotation of {max(abs(a) for a in rotation):.1f} deg is implausible"
    shift = float(np.linalg.norm(translation))
    if shift > MAX_TRANSLATION_MM:
        return False, f"{measured}: shift of {shift:.1f} mm is implausible"
    return True, f"{measured}, shift {shift:.1f} mm, rotation up to {max(abs(a) for a in rotation):.1f} deg"
