"""MR preprocessing shared by every MR recipe: load -> N4 -> 0..255 -> register -> resample.

``prepare_mr(series, reference)`` takes each role's images, and returns every role as a
float32 0..255 array on the reference series' grid (slices, rows, cols), so an ROI found on
the reference maps 1:1 and sequences with other slice counts or orientations are
resampled in patient coordinates, never indexed by slice number.

1. load: slices sorted along the normal, RescaleSlope/Intercept applied (:mod:`.volume`);
2. N4 bias-field correction on a shrunk copy in an Otsu body mask (:mod:`.bias`);
3. normalise: body-mask percentiles 0.5/99.5 -> 0/255, clipped (:mod:`.intensity`);
4. register: rigid, Mattes MI, to the reference when the sequences do not already line up
   (:mod:`.register`). ``register="auto"`` registers when the FrameOfReferenceUID (PS3.3
   C.7.4.1: one patient-coordinate system) differs, is missing, or the series come from
   different studies; otherwise the scanner geometry is trusted and the result says so.
   A registration that fails its quality check raises :class:`MRPreprocessError`
   (unless ``register="never"``): no guessed input;
5. resample onto the reference grid (linear, 0 outside a sequence's field of view).

Each step's time is summed over the sequences, logged and exported as the stage
``mr_<step>`` (:func:`mvi_node.metrics.observe_stage`). Messages and records name roles,
never patients.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Iterator, Mapping, Sequence

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset

from mvi_node.metrics import observe_stage
from mvi_node.preprocess import bias, intensity, register as reg
from mvi_node.preprocess.register import RegistrationResult
from mvi_node.preprocess.resample import INTERPOLATOR, coverage_onto, image_like, resample_onto
from mvi_node.preprocess.volume import VolumeError, load_volume
from mvi_node.roi.geometry import SeriesGeometry

log = logging.getLogger(__name__)

REGISTER_MODES = ("auto", "always", "never")
STEPS = ("load", "n4", "normalise", "register", "resample")

PREPROCESSING_CONSTANTS: dict = {
    "n4": {"shrink_to_mm": bias.N4_SHRINK_MM, "iterations_per_level": list(bias.N4_ITERATIONS),
           "convergence_threshold": bias.N4_CONVERGENCE, "control_points": bias.N4_CONTROL_POINTS,
           "histogram_bins": bias.N4_HISTOGRAM_BINS, "mask": f"otsu ({bias.OTSU_BINS} bins)",
           "field": "log bias field evaluated at full resolution"},
    "intensity": {"percentiles": [intensity.PERCENTILE_LOW, intensity.PERCENTILE_HIGH],
                  "inside": "otsu body mask", "range": [0.0, intensity.GREY_MAX], "clipped": True},
    "interpolator": INTERPOLATOR,
    "outside_value": 0.0,
    "registration": {
        "transform": "euler3d", "initial": "identity (scanner geometry), centre of the reference",
        "metric": reg.METRIC, "metric_bins": reg.METRIC_BINS, "sampling": f"random {reg.SAMPLING:.0%} in body mask",
        "sampling_seed": reg.SAMPLING_SEED,
        "gradient": "image gradient filters" if reg.GRADIENT_FILTERS else "central differences at the samples",
        "optimiser": reg.OPTIMISER, "learning_rate": reg.LEARNING_RATE, "min_step": reg.MIN_STEP,
        "iterations": reg.ITERATIONS, "levels_mm": [2 * reg.FINEST_LEVEL_MM, reg.FINEST_LEVEL_MM],
        "smoothing_voxels": list(reg.SMOOTHING_VOXELS),
        "auto": "register when FrameOfReferenceUID differs or is missing, or the studies differ",
        "quality": {"measure": reg.QUALITY_MEASURE, "bins": reg.QUALITY_BINS, "min": reg.MIN_NMI,
                    "max_loss": reg.MAX_NMI_LOSS, "min_overlap": reg.MIN_OVERLAP,
                    "max_rotation_deg": reg.MAX_ROTATION_DEG, "max_translation_mm": reg.MAX_TRANSLATION_MM,
                    "on_failure": "MRPreprocessError"},
    },
}


class MRPreprocessError(ValueError):
    """A sequence cannot be used; the message is for the SR (roles, no patient data)."""

    def __init__(self, reason: str, role: str | None = None, registration: RegistrationResult | None = None):
        super().__init__(reason)
        self.reason = reason
        self.role = role
        self.registration = registration


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)


@dataclass
class MRVolumes:
    """Every role on the reference grid, and what was done to get there."""

    reference: str
    geometry: SeriesGeometry
    arrays: dict[str, np.ndarray]
    percentiles: dict[str, tuple[float, float]]
    registration: dict[str, RegistrationResult]
    timings: dict[str, float]
    body_mask: np.ndarray  # bool, reference grid: Otsu body mask of the reference
    #: role -> bool (slices, rows, cols): reference voxels inside that sequence's field of
    #: view (outside, its array holds 0, not data)
    coverage: dict[str, np.ndarray]
    n4: dict[str, dict | None] = field(default_factory=dict)  # per role: shrink, iterations run
    inputs: dict[str, dict] = field(default_factory=dict)  # per role: native shape and spacing
    options: dict = field(default_factory=dict)
    #: step -> process CPU seconds (all threads; on a shared machine steadier than wall time)
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    def slice_coverage(self, role: str) -> np.ndarray:
        """Per reference slice, the fraction of the reference body that ``role`` covers
        (1.0 where the body is empty), so a recipe can refuse slices a sequence lacks."""
        body = self.body_mask.sum(axis=(1, 2))
        covered = (self.body_mask & self.coverage[role]).sum(axis=(1, 2))
        return np.where(body > 0, covered / np.maximum(body, 1), 1.0)

    def record(self) -> dict:
        """JSON-able summary (no patient data, no UIDs) for logs, the SR and the manifest."""
        geo = self.geometry
        return {
            "reference": self.reference,
            "grid": {"shape": list(geo.shape),
                     "spacing_mm": [round(abs(geo.slice_gap), 4), *(round(s, 4) for s in geo.spacing_rc)],
                     "orientation": [round(float(v), 6) for v in geo.orientation]},
            "inputs": self.inputs,
            "options": self.options,
            "coverage": {r: round(float((self.body_mask & c).sum() / max(1, self.body_mask.sum())), 4)
                         for r, c in self.coverage.items()},
            "percentiles": {r: [round(lo, 4), round(hi, 4)] for r, (lo, hi) in self.percentiles.items()},
            "n4": self.n4,
            "registration": {r: {k: (_finite(v) if isinstance(v, float) else v) for k, v in res.as_dict().items()}
                             for r, res in self.registration.items()},
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "cpu_seconds": {k: round(v, 4) for k, v in self.cpu_seconds.items()},
            "constants": PREPROCESSING_CONSTANTS,
        }


def _needs_registration(mode: str, ref: Sequence[Dataset], other: Sequence[Dataset]) -> tuple[bool, str]:
    if mode == "never":
        return False, "registration switched off: scanner geometry trusted"
    if mode == "always":
        return True, "registration requested for every sequence"
    frame_ref, frame = (str(s[0].get("FrameOfReferenceUID", "") or "") for s in (ref, other))
    study_ref, study = (str(s[0].get("StudyInstanceUID", "") or "") for s in (ref, other))
    if not frame_ref or not frame:
        return True, "FrameOfReferenceUID missing"
    if frame_ref != frame:
        return True, "different frame of reference"
    if study_ref != study:
        return True, "different studies"
    return False, "same frame of reference and study: scanner geometry trusted"


def prepare_mr(series: Mapping[str, Sequence[Dataset]], reference: str, *, n4: bool = True,
               register: str = "auto") -> MRVolumes:
    """Every role of ``series`` as 0..255 float32 on the grid of role ``reference``."""
    if register not in REGISTER_MODES:
        raise ValueError(f"register must be one of {REGISTER_MODES}, not {register!r}")
    if reference not in series:
        raise MRPreprocessError(f"the reference sequence {reference} is missing", reference)
    roles = [reference, *(r for r in series if r != reference)]
    timings, cpu = dict.fromkeys(STEPS, 0.0), dict.fromkeys(STEPS, 0.0)

    @contextmanager
    def timed(step: str) -> Iterator[None]:
        start, start_cpu = time.monotonic(), time.process_time()
        with observe_stage(f"mr_{step}"):
            try:
                yield
            finally:
                timings[step] += time.monotonic() - start
                cpu[step] += time.process_time() - start_cpu

    images: dict[str, sitk.Image] = {}
    geos: dict[str, SeriesGeometry] = {}
    with timed("load"):
        for role in roles:
            if not series[role]:
                raise MRPreprocessError(f"{role}: the series has no images", role)
            try:
                images[role], geos[role] = load_volume(series[role])
            except VolumeError as exc:
                raise MRPreprocessError(f"{role}: {exc}", role) from exc

    masks: dict[str, sitk.Image] = {}
    n4_info: dict[str, dict | None] = {}
    with timed("n4"):
        for role in roles:
            if n4:
                try:
                    images[role], masks[role], n4_info[role] = bias.n4_correct(images[role])
                except RuntimeError as exc:  # ITK: an empty body mask, a constant image
                    raise MRPreprocessError(f"{role}: N4 bias-field correction failed (no body found)",
                                            role) from exc
            else:
                masks[role], n4_info[role] = bias.body_mask(images[role]), None

    grey: dict[str, sitk.Image] = {}
    percentiles: dict[str, tuple[float, float]] = {}
    with timed("normalise"):
        for role in roles:
            values = sitk.GetArrayFromImage(images[role])
            try:
                percentiles[role] = intensity.robust_range(values, sitk.GetArrayFromImage(masks[role]))
            except ValueError as exc:
                raise MRPreprocessError(f"{role}: {exc}", role) from exc
            grey[role] = image_like(intensity.to_grey(values, *percentiles[role]), images[role])

    ref_grey, ref_mask = grey[reference], masks[reference]
    body = sitk.GetArrayFromImage(ref_mask).astype(bool)
    transforms: dict[str, sitk.Transform | None] = {}
    results: dict[str, RegistrationResult] = {
        reference: RegistrationResult(False, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), float("nan"), float("nan"), True,
                                      "reference sequence")}
    why_not: dict[str, str] = {}
    with timed("register"):
        for role in roles[1:]:
            wanted, why = _needs_registration(register, series[reference], series[role])
            if not wanted:
                transforms[role], why_not[role] = None, why
                continue
            transforms[role], res = reg.register(ref_grey, ref_mask, grey[role])
            results[role] = replace(res, reason=f"{why}: {res.reason}")
            log.info("mr registration %s -> %s: %s", role, reference, results[role].reason,
                     extra={"role": role, "reference": reference, "passed": res.passed})
            if not res.passed:
                raise MRPreprocessError(f"registration of {role} to {reference} failed its quality check "
                                        f"({results[role].reason})", role, results[role])

    arrays = {reference: sitk.GetArrayFromImage(ref_grey)}
    coverage = {reference: np.ones(body.shape, bool)}
    with timed("resample"):
        for role in roles[1:]:
            moved = resample_onto(grey[role], ref_grey, transforms[role])
            arrays[role] = sitk.GetArrayFromImage(moved)
            coverage[role] = coverage_onto(grey[role], ref_grey, transforms[role])
            if role in why_not:  # the measure is logged even where geometry is trusted
                inside = body & coverage[role]
                score = reg.nmi(arrays[reference], arrays[role], inside)
                overlap = float(inside.sum() / max(1, body.sum()))
                note = f"NMI {score:.3f}"
                if not score >= reg.MIN_NMI:  # trusted all the same (the caller chose), but said
                    note += f", below the registration threshold {reg.MIN_NMI:.2f}"
                    log.warning("mr sequence %s barely matches %s with the scanner geometry (%s)", role, reference,
                                note, extra={"role": role, "reference": reference})
                results[role] = RegistrationResult(False, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), score, score, True,
                                                   f"{why_not[role]} ({note})", overlap)
    inputs = {r: {"shape": list(g.shape), "spacing_mm": [round(abs(g.slice_gap), 4), *g.spacing_rc],
                  "orientation": [round(float(v), 6) for v in g.orientation]} for r, g in geos.items()}
    vols = MRVolumes(reference, geos[reference], arrays, percentiles, {r: results[r] for r in roles}, timings,
                     body, coverage, n4_info, inputs, {"n4": n4, "register": register}, cpu)
    log.info("mr preprocessing of %d sequences onto %s: %s", len(roles), reference,
             ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
    return vols
