"""Segmentation recipes and the engine's segmentation service. Torch-free.

A :class:`SegmentationRecipe` is a recipe whose product is a label map (background /
liver / tumour), not a probability: the engine never offers it an exam to predict on.
Instead it serves it as the **automatic ROI** of every other recipe: the engine puts a
callable in :attr:`ExamInputs.auto_roi <mvi_node.infer.recipe.ExamInputs.auto_roi>`
that, when a recipe finds no annotation (``find_roi(exam, target, automatic=...)``),
runs the segmentation model on the recipe's target series (once per series and exam,
however many recipes ask) and hands back the main lesion as a
:class:`~mvi_node.roi.model.Roi` whose source reads "automatic: <recipe> <version>".
No recipe imports another: the segmentation model is found through the model registry
like any model.

Serving, per series: HU from the Modality LUT, resampled (linear, SimpleITK) to the
model's grid ``spacing_mm``, windowed and scaled to 0..1 -- a model with more than one
input channel also gets the exam's other phases (``channel_roles``), each first brought
onto the target series' voxel grid in patient coordinates (:func:`phase_on_grid`), a
phase the exam lacks (or one in another frame of reference) as a channel of zeros, the
value the model was trained to read as "no such phase" --, sliding window
(:mod:`mvi_node.infer.sliding`) over the ONNX graph's ``probabilities``, resampled back
to the series grid (linear, per class), argmax, post-processing
(:func:`mvi_node.roi.automatic.postprocess`).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
from pydicom.dataset import Dataset

from mvi_node.common.frames import frame_pixels, view_key
from mvi_node.infer.recipe import NO_ROI, ExamInputs, ModelRunner, NotEvaluated, Prediction, Recipe
from mvi_node.infer.sliding import sliding_window
from mvi_node.roi import NoRoi, Roi, SeriesGeometry, series_geometry
from mvi_node.roi.automatic import Segmentation, postprocess

log = logging.getLogger(__name__)

VARIANT = "segmentation"
NOT_A_PREDICTION = "segmentation recipe: its result is the automatic ROI of the other recipes"


def hu_volume(geo: SeriesGeometry) -> np.ndarray:
    """(slices, rows, cols) float32 values through each image's Modality LUT (HU for CT)."""
    from pydicom.pixels import apply_modality_lut

    out = np.empty(geo.shape, np.float32)
    for z, ds in enumerate(geo.datasets):  # a classic image, or a frame of an Enhanced one
        out[z] = apply_modality_lut(frame_pixels(ds), ds)
    return out


def series_spacing(geo: SeriesGeometry) -> tuple[float, float, float]:
    """(slice gap, row spacing, column spacing) in mm."""
    return (abs(geo.slice_gap) or 1.0, float(geo.spacing_rc[0]), float(geo.spacing_rc[1]))


def model_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, int, int]:
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))  # type: ignore[return-value]


def resample(volume: np.ndarray, spacing: Sequence[float], target: Sequence[float],
             shape: Sequence[int] | None = None, linear: bool = True) -> np.ndarray:
    """``volume`` (z, y, x) on a grid of ``spacing`` mm -> the grid of ``target`` mm covering
    the same extent (edges aligned; ``shape`` given: that many voxels)."""
    import SimpleITK as sitk

    shape = tuple(shape) if shape is not None else model_shape(volume.shape, spacing, target)
    if tuple(shape) == tuple(volume.shape) and np.allclose(spacing, target):
        return np.asarray(volume, np.float32)
    img = sitk.GetImageFromArray(np.ascontiguousarray(volume, np.float32))
    img.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    extent = [n * s for n, s in zip(volume.shape, spacing)]
    out_spacing = [e / n for e, n in zip(extent, shape)]
    origin = [-0.5 * s + 0.5 * o for s, o in zip(spacing, out_spacing)]
    res = sitk.Resample(img, [int(n) for n in reversed(shape)], sitk.Transform(),
                        sitk.sitkLinear if linear else sitk.sitkNearestNeighbor,
                        tuple(float(v) for v in reversed(origin)), tuple(float(v) for v in reversed(out_spacing)),
                        img.GetDirection(), 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(res)


AIR_HU = -1000.0


def same_grid(a: SeriesGeometry, b: SeriesGeometry) -> bool:
    return (a.shape == b.shape and np.allclose(a.positions, b.positions, atol=1e-3)
            and np.allclose(a.orientation, b.orientation, atol=1e-5) and np.allclose(a.spacing_rc, b.spacing_rc))


def phase_on_grid(source: SeriesGeometry, target: SeriesGeometry) -> np.ndarray:
    """HU of ``source`` on ``target``'s voxel grid (slices, rows, cols): linear resampling in
    patient coordinates (the scanner's, trusted within one frame of reference: the phases
    of one CT exam), air where ``source`` has no data. A copy when the grids coincide."""
    if same_grid(source, target):
        return hu_volume(source)
    from mvi_node.preprocess.resample import image_like, resample_onto

    moving = image_like(hu_volume(source), source.reference())
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(resample_onto(moving, target.reference(), default=AIR_HU))


def usable_phase(geo: SeriesGeometry, target: SeriesGeometry) -> bool:
    """Whether ``geo`` can be read through patient coordinates on ``target``'s grid: both in
    one frame of reference (or either without one)."""
    return not (target.frame_uid and geo.frame_uid and geo.frame_uid != target.frame_uid)


def input_channels(model: ModelRunner) -> int:
    """Channels of the served graph's ``image`` input (1 when the manifest does not say)."""
    variant = getattr(model, "variants", {}).get(VARIANT)
    shape = getattr(variant, "inputs", {}).get("image") if variant is not None else None
    if shape and len(shape) > 1 and isinstance(shape[1], int):
        return int(shape[1])
    return int(getattr(model, "input_channels", 1))


def window01(values: np.ndarray, level: float, width: float) -> np.ndarray:
    """Linear window to 0..1 (float32)."""
    low = level - width / 2.0
    return np.clip((np.asarray(values, np.float32) - low) / width, 0.0, 1.0).astype(np.float32)


class SegmentationRecipe(Recipe):
    """A recipe that labels background / liver / tumour; served as the automatic ROI.

    Subclasses set the constants; the model folder holds one ONNX variant
    ``segmentation`` with input ``image`` (1, channels, z, y, x; spatial axes dynamic)
    and output ``probabilities`` (1, len(labels), z, y, x; softmax in the graph).
    """

    task: ClassVar[str] = "segmentation"
    labels: ClassVar[tuple[str, ...]] = ("background", "liver", "tumour")
    #: (level, width) of the grey-value window; values are then scaled to 0..1
    window: ClassVar[tuple[float, float]] = (70.0, 350.0)
    #: model grid (z, y, x) in mm the series is resampled to
    spacing_mm: ClassVar[tuple[float, float, float]] = (5.0, 2.5, 2.5)
    #: sliding-window tile (z, y, x) in model voxels, overlap fraction, blending
    patch: ClassVar[tuple[int, int, int]] = (32, 96, 96)
    overlap: ClassVar[float] = 0.25
    blend: ClassVar[str] = "gaussian"
    #: tile edges must be multiples of the network's total stride per axis
    multiple: ClassVar[tuple[int, int, int]] = (4, 8, 8)
    min_lesion_ml: ClassVar[float] = 0.2
    min_liver_ml: ClassVar[float] = 100.0
    #: input channels in order, the target series (``requires[0]``) first; a model reads
    #: as many as its graph's channel axis has (empty: the target alone)
    channel_roles: ClassVar[tuple[str, ...]] = ()

    # -- the recipe interface: never a prediction ------------------------------------
    def prepare(self, exam: ExamInputs) -> SeriesGeometry | NotEvaluated:
        return series_geometry(list(exam.series[self.requires[0]]))

    def predict(self, prepared: Any, model: ModelRunner) -> Prediction | NotEvaluated:
        return NotEvaluated(NO_ROI, (NOT_A_PREDICTION,))

    def preprocessing(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "window_level": self.window[0], "window_width": self.window[1],
                "image_scale": "window to 0..1", "spacing_mm": list(self.spacing_mm),
                "resampling": "linear (SimpleITK), edges aligned; back to the series grid linear per class",
                "patch": list(self.patch), "overlap": self.overlap, "blend": self.blend,
                "min_lesion_ml": self.min_lesion_ml, "min_liver_ml": self.min_liver_ml,
                "slice_order": "ascending along the slice normal (feet to head for axial LPS)"}

    # -- serving ----------------------------------------------------------------------
    def model_input(self, hu: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """HU volume on a grid of ``spacing`` mm -> the network's input grid (z, y, x), 0..1."""
        return window01(resample(hu, spacing, self.spacing_mm), *self.window)

    def probabilities(self, x: np.ndarray, tile: Callable[[np.ndarray], np.ndarray],
                      patch: Sequence[int] | None = None) -> tuple[np.ndarray, dict]:
        """Per-class probabilities (K, z, y, x) of a model-grid input, and how the window ran."""
        return sliding_window(x, tile, patch or self.patch, self.overlap, self.blend, 0.0, self.multiple)

    def extra_channels(self, target: SeriesGeometry, phases: Mapping[str, SeriesGeometry], channels: int,
                       shape: Sequence[int]) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
        """Model-grid inputs of channels 2..``channels`` (the exam's other phases on ``target``'s
        grid, zeros for one it lacks) and, per channel, its role and the series used or why none."""
        spacing = series_spacing(target)
        out, used = [], []
        for role in self.channel_roles[1:channels]:
            geo = phases.get(role)
            why = None
            if geo is None:
                why = "not in the exam"
            elif not usable_phase(geo, target):
                why = "another frame of reference"
            if why is None:
                x = self.model_input(phase_on_grid(geo, target), spacing)
                used.append({"role": role, "series_instance_uid": str(geo.datasets[0].get("SeriesInstanceUID", "")),
                             "registration": "patient coordinates" if not same_grid(geo, target) else "same grid"})
            else:
                x = np.zeros(tuple(shape), np.float32)
                used.append({"role": role, "series_instance_uid": None, "missing": why})
            out.append(x)
        return out, used

    def reads_phase(self, geo: SeriesGeometry, target: SeriesGeometry) -> bool:
        """Whether another series can feed a channel on ``target``'s grid (CT: one frame of
        reference, read through patient coordinates; an MR recipe registers instead)."""
        return usable_phase(geo, target)

    def channel_inputs(self, target: SeriesGeometry, phases: Mapping[str, SeriesGeometry],
                       channels: int) -> tuple[np.ndarray, dict[str, Any]]:
        """The network's input on the model grid ((channels,) z, y, x; 0..1) and, for more than
        one channel, the segmentation info's ``channels`` (role and series of each)."""
        hu = hu_volume(target)
        x = self.model_input(hu, series_spacing(target))
        del hu
        if channels <= 1:
            return x, {}
        extra, used = self.extra_channels(target, phases, channels, x.shape)
        return np.stack([x, *extra]), {"channels": [
            {"role": (self.channel_roles or self.requires)[0],
             "series_instance_uid": str(target.datasets[0].get("SeriesInstanceUID", ""))}, *used]}

    def segment(self, target: SeriesGeometry, model: ModelRunner, identity: Mapping[str, Any],
                patch: Sequence[int] | None = None,
                phases: Mapping[str, SeriesGeometry] | None = None) -> Segmentation:
        """The model's label map of ``target``, post-processed into liver and ranked lesions.

        ``phases``: the exam's other series by role, read when the model has more input
        channels than one (``channel_roles``)."""
        t0 = time.perf_counter()
        probs, info = self.model_probabilities(target, model, patch, phases)
        threshold = float(model.threshold(VARIANT)) if VARIANT in getattr(model, "variants", {}) else 0.5
        return self.from_probabilities(probs, info, target, identity, threshold, t0)

    def model_probabilities(self, target: SeriesGeometry, model: ModelRunner, patch: Sequence[int] | None = None,
                            phases: Mapping[str, SeriesGeometry] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """The network's per-class probabilities of ``target`` on the model grid (K, z, y, x)
        and how they were made (tiles, channels, grids): the costly half of :meth:`segment`,
        kept apart so that a threshold sweep runs the network once per exam."""
        x, extra_info = self.channel_inputs(target, phases or {}, input_channels(model))

        def tile(t: np.ndarray) -> np.ndarray:
            return model.run(VARIANT, {"image": t}, ["probabilities"])[0]

        probs, info = self.probabilities(x, tile, patch)
        return probs, {**info, **extra_info, "spacing_mm": list(self.spacing_mm), "model_grid": list(x.shape[-3:]),
                       "series_grid": list(target.shape)}

    def from_probabilities(self, probs: np.ndarray, info: Mapping[str, Any], target: SeriesGeometry,
                           identity: Mapping[str, Any], threshold: float, t0: float | None = None) -> Segmentation:
        """Labels on the series grid at tumour ``threshold``, post-processed into liver and ranked lesions."""
        labels = self.labels_on_series(probs, target.shape, series_spacing(target), threshold)
        liver, lesion_map, lesions, reasons = postprocess(labels, target, self.min_lesion_ml, self.min_liver_ml)
        info = {**info, "tumour_threshold": threshold}
        if t0 is not None:
            info["seconds"] = round(time.perf_counter() - t0, 2)
        return Segmentation(target, liver, lesion_map, lesions, dict(identity), info, reasons)

    def labels_on_series(self, probs: np.ndarray, shape: Sequence[int], spacing: Sequence[float],
                         tumour_threshold: float = 0.5) -> np.ndarray:
        """Per-class probabilities back on the series grid (linear, one class at a time):
        tumour where its probability reaches ``tumour_threshold`` (the model variant's
        threshold, chosen on validation exams), elsewhere the likelier of the others."""
        tumour = self.labels.index("tumour")
        best = None
        labels = np.zeros(tuple(shape), np.uint8)
        for k in range(probs.shape[0]):
            p = resample(probs[k], self.spacing_mm, spacing, shape)
            if k == tumour:
                labels[p >= tumour_threshold] = k
                continue
            if best is None:
                best = p
                continue
            better = (p > best) & (labels != tumour)
            labels[better] = k
            best = np.where(p > best, p, best)
        return labels


class SegmentationService:
    """The engine's served segmentation recipes (with verified models), as automatic ROIs.

    ``fallbacks``: per recipe, other verified versions (highest first) for an exam that
    lacks a phase the served model reads as a channel: the highest of them whose channels
    the exam has runs instead (liver_tumor_seg 0.2.0 reads the portal venous phase; an
    exam with the arterial phase alone gets 0.1.0, which was trained on it alone, rather
    than 0.2.0 with a blank channel). ``model_identity`` names such a fallback model."""

    def __init__(self, segmenters: Sequence[tuple[SegmentationRecipe, Any]], runner: Callable[[Any], ModelRunner],
                 identity: Callable[[str], Mapping[str, Any]], fallbacks: Mapping[str, Sequence[Any]] | None = None,
                 model_identity: Callable[[Any], Mapping[str, Any]] | None = None) -> None:
        self.segmenters = list(segmenters)
        self._runner, self._identity = runner, identity
        self.fallbacks = {k: list(v) for k, v in (fallbacks or {}).items()}
        self._model_identity = model_identity

    def model_for(self, recipe: SegmentationRecipe, model: Any, phases: Mapping[str, Any]) -> Any:
        """``model``, or the first fallback whose extra channels are all in ``phases``."""
        def has_all(m: Any) -> bool:
            return all(r in phases for r in recipe.channel_roles[1:input_channels(m)])

        if has_all(model) or self._model_identity is None:
            return model
        return next((m for m in self.fallbacks.get(recipe.name, ()) if has_all(m)), model)

    def __bool__(self) -> bool:
        return bool(self.segmenters)

    def for_modality(self, modality: str) -> tuple[SegmentationRecipe, Any] | None:
        return next(((r, m) for r, m in self.segmenters if modality in r.modalities), None)

    def segment(self, target: SeriesGeometry | Sequence[Dataset],
                phases: Mapping[str, Sequence[Dataset]] | None = None) -> Segmentation | NoRoi:
        """The served segmentation of one series, or why there is none (never raises).

        ``phases``: the exam's selected series by role (the selection's winners), from which
        a model with more input channels takes its other phases; the target is never one."""
        geo = target if isinstance(target, SeriesGeometry) else series_geometry(list(target))
        modality = str(geo.datasets[0].get("Modality", ""))
        chosen = self.for_modality(modality)
        if chosen is None:
            return NoRoi([f"automatic: no segmentation model for {modality or 'this modality'}"])
        recipe, model = chosen
        ident = self._identity(recipe.name)
        label = f"automatic: {recipe.name} {ident.get('model_version', '')}".strip()
        try:
            others = {}
            uid = str(geo.datasets[0].get("SeriesInstanceUID", ""))
            for role in recipe.channel_roles[1:]:
                ds = list((phases or {}).get(role) or ())
                if ds and not (str(ds[0].get("SeriesInstanceUID", "")) == uid and len(ds) == len(geo.datasets)):
                    other = series_geometry(ds)
                    if recipe.reads_phase(other, geo):
                        others[role] = other
            chosen_model = self.model_for(recipe, model, others)
            if chosen_model is not model:
                assert self._model_identity is not None
                ident = self._model_identity(chosen_model)
                label = f"automatic: {recipe.name} {ident.get('model_version', '')}".strip()
                log.info("segmentation %s: the exam lacks a phase %s reads; %s runs instead", recipe.name,
                         getattr(model, "version", "?"), ident.get("model_version"))
            seg = recipe.segment(geo, self._runner(chosen_model), ident, phases=others)
        except Exception as exc:  # noqa: BLE001 - reported as the ROI's reason, UIDs only
            log.exception("segmentation %s failed on series %s", recipe.name, geo.datasets[0].get("SeriesInstanceUID"))
            return NoRoi([f"{label}: failed ({type(exc).__name__})"])
        log.info("segmentation %s on series %s: %d lesion(s) in %.1f s (tiles %s)", recipe.name, seg.series_uid,
                 len(seg.lesions), seg.info.get("seconds", 0.0), seg.info.get("patch"))
        return seg

    def for_exam(self, phases: Mapping[str, Sequence[Dataset]] | None = None) -> "ExamSegmentations":
        return ExamSegmentations(self, phases)


class ExamSegmentations:
    """``ExamInputs.auto_roi`` of one exam: each series segmented once, results kept.

    ``phases``: the exam's selected series by role, for a model that reads other phases.
    ``asked``: each call's key in order, so the engine can tell which segmentation a recipe's
    ROI came from (:meth:`mark`, then :meth:`segmentation` with ``since``): in a series that
    holds several phases, two recipes may segment two of them."""

    def __init__(self, service: SegmentationService, phases: Mapping[str, Sequence[Dataset]] | None = None) -> None:
        self.service = service
        self.phases = dict(phases or {})
        self.results: dict[tuple[str, str, int], Segmentation | NoRoi] = {}
        self.asked: list[tuple[str, str, int]] = []

    def __call__(self, target: SeriesGeometry | Sequence[Dataset]) -> Roi | NoRoi:
        geo = target if isinstance(target, SeriesGeometry) else series_geometry(list(target))
        # one phase of a multi-phase series is its own volume: keyed by its first image too
        # (SOP and frame: the phases of an Enhanced instance share its SOP Instance UID)
        key = (str(geo.datasets[0].SeriesInstanceUID), view_key(geo.datasets[0]), len(geo.datasets))
        if key not in self.results:
            self.results[key] = self.service.segment(geo, self.phases)
        self.asked.append(key)
        found = self.results[key]
        return found.roi() if isinstance(found, Segmentation) else found

    def mark(self) -> int:
        """Where the calls from now on start, for :meth:`segmentation`'s ``since``."""
        return len(self.asked)

    def segmentation(self, series_uid: str, since: int = 0) -> Segmentation | None:
        """The segmentation that found lesions on ``series_uid`` among the calls from ``since``
        on, the latest first (None: none did)."""
        for key in reversed(self.asked[since:]):
            found = self.results[key]
            if key[0] == series_uid and isinstance(found, Segmentation) and found.found:
                return found
        return None
