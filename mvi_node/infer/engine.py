"""The inference engine: every served recipe over one selected exam, never silent.

A recipe is served when its code is registered (:mod:`mvi_node.infer.catalog`) and a
verified model folder for it is installed (:mod:`mvi_node.infer.registry`). For each
exam the engine offers it to the served recipes that read the exam's modality; each
one says whether the selected series qualify, prepares its inputs and predicts with a
:class:`ModelRunner` over its ONNX sessions (created lazily, kept across jobs) or its
classical arrays. Providers are tried in the configured order (default TensorRT, CUDA,
then CPU) among those the installed onnxruntime offers; each variant runs in the
precision :func:`mvi_node.infer.precision.choose_precision` picks (the fastest copy whose
accuracy check passed, or the site's pin, else fp32) and its identity names that graph.

What gets reported: one result per recipe that evaluated the exam; when none did, one
result that says why, per candidate recipe.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np

from mvi_node import __version__
from mvi_node.clinical import ClinicalSource, NullClinicalSource
from mvi_node.concepts import Code, procedure_for
from mvi_node.infer.calibration import Calibration
from mvi_node.infer.catalog import RecipeCatalog
from mvi_node.infer.manifest import ModelInfo
from mvi_node.infer.precision import (AUTO, DEFAULT_PROVIDERS, choose_precision, device_of, pick_providers,
                                      provider_options, run_bound)
from mvi_node.infer.recipe import (FAILED, NO_SERIES, OK, Endpoint, ExamInputs, NotEvaluated, Prediction, Recipe)
from mvi_node.infer.registry import ModelRegistry, _version_key
from mvi_node.infer.segmentation import SegmentationRecipe, SegmentationService
from mvi_node.roi.automatic import AUTOMATIC

log = logging.getLogger(__name__)

NO_RECIPE = "no recipe for this exam"


@dataclass(frozen=True)
class RecipeResult:
    """One exam x recipe: a :class:`Prediction` or a :class:`NotEvaluated`.

    ``reported``: whether the report stage turns it into results for PACS (every
    evaluation; of the rest, only the one that says why nothing ran). ``recipe`` is
    empty for that combined result, whose ``not_run`` lists (recipe, why) per candidate.
    """

    recipe: str
    patient_id: str
    study_instance_uids: tuple[str, ...]
    model: Mapping[str, Any]
    procedure: Code
    endpoint: Endpoint | None = None
    prediction: Prediction | None = None
    not_evaluated: NotEvaluated | None = None
    reported: bool = True
    not_run: tuple[tuple[str, str], ...] = ()
    #: (level, width) the recipe wants its captures in; None: the series' own window
    capture_window: tuple[float, float] | None = None
    #: the automatic segmentation (``mvi_node.roi.automatic.Segmentation``) the ROI came
    #: from; the report writes it as a DICOM SEG. None: the ROI was an annotation
    segmentation: Any = None

    @property
    def outcome(self) -> str:
        return OK if self.prediction is not None else (self.not_evaluated.outcome if self.not_evaluated else FAILED)

    @property
    def reasons(self) -> list[str]:
        return list(self.not_evaluated.reasons) if self.not_evaluated else []

    @property
    def probability(self) -> float | None:
        return self.prediction.probability if self.prediction else None

    @property
    def threshold(self) -> float | None:
        return self.prediction.threshold if self.prediction else None

    @property
    def decision(self) -> bool | None:
        return self.prediction.decision if self.prediction else None

    predicted_mvi = decision

    @property
    def series_instance_uid(self) -> str | None:
        if self.prediction:
            return self.prediction.series_uid
        return self.not_evaluated.series_uid if self.not_evaluated else None

    @property
    def roi(self) -> dict[str, Any]:
        return dict(self.prediction.roi) if self.prediction else {}

    @property
    def clinical_factors_used(self) -> bool:
        return bool(self.prediction and self.prediction.factors_used)

    @property
    def clinical_missing(self) -> list[str]:
        if self.prediction:
            return list(self.prediction.factors_missing)
        return list(self.not_evaluated.factors_missing) if self.not_evaluated else []

    @property
    def key_slices(self) -> list:
        return [s for f in (self.prediction.findings if self.prediction else ()) for s in f.key_slices]

    @property
    def slice_info(self) -> list[dict[str, Any]]:
        return [{"sop_instance_uid": s.sop_instance_uid, "slice_index": s.slice_index, "probability": s.probability,
                 "crop_box": dict(s.crop_box) if s.crop_box is not None else None,
                 # a frame of an Enhanced multi-frame instance: (SOP, frame) names the image
                 **({"frame_number": s.frame_number} if getattr(s, "frame_number", None) is not None else {})}
                for s in self.key_slices]

    @property
    def gradcam(self) -> np.ndarray | None:
        maps = [s.explanation for s in self.key_slices if s.explanation is not None]
        return np.stack(maps) if maps else None

    def as_dict(self) -> dict[str, Any]:
        """The ``mvi-node infer --json`` record and the job result (maps summarised)."""
        p = self.prediction
        maps = self.gradcam
        return {
            "patient_id": self.patient_id, "study_instance_uids": list(self.study_instance_uids),
            "recipe": self.recipe, "outcome": self.outcome, "reported": self.reported,
            "endpoint": self.endpoint.name if self.endpoint else None,
            "model_version": self.model.get("model_version"), "model_sha256": self.model.get("sha256"),
            "model_precision": self.model.get("precision"),
            "variant": p.variant if p else self.model.get("variant"), "intended_use": self.model.get("intended_use"),
            "training_data": self.model.get("training_data"),
            "probability": self.probability, "predicted_mvi": self.decision, "decision": self.decision,
            "threshold": self.threshold, "raw_probability": p.raw_probability if p else None,
            "calibration": self.model.get("calibration"),
            "class_probabilities": dict(p.class_probabilities) if p else {},
            "findings": [{"tracking_id": f.tracking_id, "probability": f.probability, "decision": f.decision,
                          "max_diameter_mm": f.max_diameter_mm, "class_probabilities": dict(f.class_probabilities),
                          "slices": len(f.key_slices),
                          "scores": [{"concept": s.concept.meaning, "value": s.value, "basis": s.basis}
                                     for s in f.scores]} for f in (p.findings if p else ())],
            "slices": len(self.key_slices), "roi_source": self.roi.get("source"), "roi": self.roi,
            "clinical_factors_used": self.clinical_factors_used, "clinical_factors_missing": self.clinical_missing,
            "reasons": self.reasons, "not_run": [{"recipe": r, "why": w} for r, w in self.not_run],
            "segmentation": self.segmentation.summary() if self.segmentation is not None else None,
            "gradcam": {"series_instance_uid": self.series_instance_uid,
                        "map_size": list(maps.shape[1:]) if maps is not None else None,
                        "map_range": "0..1 per slice (min-max)", "slices": self.slice_info},
        }


class _Runner:
    """:class:`mvi_node.infer.recipe.ModelRunner` over one model folder."""

    def __init__(self, engine: "Engine", model: ModelInfo, precision: str | None = None) -> None:
        #: ``precision`` forces one (the accuracy check); None: the engine's choice per variant
        self.engine, self.model, self.precision = engine, model, precision

    @property
    def variants(self):
        return self.model.variants

    def threshold(self, variant: str) -> float:
        return self.model.variants[variant].threshold

    def calibrate(self, variant: str, p: float) -> float:
        calibration = self.model.variants[variant].calibration
        return float(calibration.apply(p)) if calibration is not None else float(p)

    def run(self, variant: str, feeds: Mapping[str, np.ndarray], outputs: Sequence[str],
            batched: Sequence[str] = ()) -> list[np.ndarray]:
        sess = self.engine.session(self.model, variant, self.precision)
        feeds = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()}
        run = self.engine.runner_of(sess)
        if not batched:
            return run(list(outputs), feeds)
        n = len(feeds[batched[0]])
        step = self.engine.batch_size
        parts: list[list[np.ndarray]] = []
        for i in range(0, n, step):
            chunk = {k: (v[i:i + step] if k in batched else v) for k, v in feeds.items()}
            parts.append(run(list(outputs), chunk))
        return [np.concatenate([p[j] for p in parts]) for j in range(len(outputs))]

    def arrays(self, variant: str) -> Mapping[str, np.ndarray]:
        return self.model.variants[variant].arrays()


class Engine:
    """Served recipes x verified models; sessions created lazily and kept."""

    def __init__(self, registry: ModelRegistry, clinical: ClinicalSource | None = None,
                 providers: Sequence[str] = DEFAULT_PROVIDERS, batch_size: int = 64, threads: int = 0,
                 recipes: RecipeCatalog | None = None, precision: str = AUTO) -> None:
        self.registry = registry
        self.clinical = clinical or NullClinicalSource()
        self.providers = pick_providers(providers)
        #: "cuda" when a GPU provider leads: runs go through IO binding
        self.device = device_of(self.providers)
        #: the site's precision: "auto" (fastest that passed its accuracy check) or a pin
        self.precision = precision
        choose_precision(None, precision)  # an unknown value fails here, not at the first exam
        self.batch_size = batch_size
        self.threads = threads
        self.catalog = recipes if recipes is not None else RecipeCatalog.discover()
        for name in registry.models:
            if name not in self.catalog.names():
                log.warning("model folder for recipe %r has no registered recipe code: not served", name)
        served = [r for r in self.catalog if registry.get(r.name) is not None]
        #: recipes with code and a verified model: the only ones an exam is offered to
        self.recipes = self.catalog.only(r.name for r in served if not isinstance(r, SegmentationRecipe))
        #: segmentation recipes with a verified model: the automatic ROI of the others
        segmenters = [(r, registry.get(r.name)) for r in served if isinstance(r, SegmentationRecipe)]
        # other verified versions of a segmenter, for an exam without a phase the served one reads
        # (none when a version is pinned: the pin is what the site asked for)
        fallbacks = {r.name: sorted((m for m in registry.models.get(r.name, []) if m is not model),
                                    key=lambda m: _version_key(m.version), reverse=True)
                     for r, model in segmenters if r.name not in registry.pins}
        self.segmentation = SegmentationService(segmenters, lambda model: _Runner(self, model), self.identity,
                                                fallbacks, self.model_identity)
        self._sessions: dict[tuple[Path, str, str], Any] = {}
        self._precisions: dict[tuple[Path, str], str] = {}
        self._lock = threading.Lock()

    def precision_for(self, model: ModelInfo, variant: str) -> str:
        """The precision ``variant`` of ``model`` is served in (logged once, with why)."""
        key = (model.folder, variant)
        if key not in self._precisions:
            chosen, why = choose_precision(model.variants[variant], self.precision, self.providers[0])
            self._precisions[key] = chosen
            log.info("%s %s %s: %s", model.recipe, model.version, variant, why)
        return self._precisions[key]

    def session(self, model: ModelInfo, variant: str, precision: str | None = None):
        import onnxruntime as ort

        precision = precision or self.precision_for(model, variant)
        key = (model.folder, variant, precision)
        with self._lock:
            if key not in self._sessions:
                opts = ort.SessionOptions()
                if self.threads:
                    opts.intra_op_num_threads = self.threads
                path, _digest = model.variants[variant].file_for(precision)
                self._sessions[key] = ort.InferenceSession(
                    str(path), opts, providers=self.providers,
                    provider_options=provider_options(self.providers, precision))
            return self._sessions[key]

    def runner_of(self, sess):
        """``run(outputs, feeds) -> list``: IO binding on a GPU, a plain run on the CPU."""
        if self.device == "cpu":
            return lambda outputs, feeds: list(sess.run(outputs, feeds))
        return lambda outputs, feeds: run_bound(sess, feeds, outputs, self.device)

    def identity(self, recipe: str, variant: str | None = None) -> dict[str, Any]:
        """Which model would have run: reported even when it could not."""
        model = self.registry.get(recipe)
        if model is None:
            return {}
        return self.model_identity(model, variant)

    def model_identity(self, model, variant: str | None = None) -> dict[str, Any]:
        """The identity of one verified model folder (a served version or a fallback)."""
        variant = variant if variant in model.variants else next(iter(model.variants))
        return model.identity(variant, self.precision_for(model, variant) if model.variants[variant].kind == "onnx"
                              else "fp32")

    def run_exam(self, exam) -> list[RecipeResult]:
        """Every candidate recipe's result for an exam (``mvi_node.select`` Exam)."""
        winners = exam.winners()
        modalities = exam.modalities
        base = {"patient_id": exam.patient_id, "study_instance_uids": tuple(exam.study_uids),
                "procedure": procedure_for(modalities)}
        candidates = [r for r in self.recipes if r.modalities & modalities]
        # the exam's selected series by role: a segmentation model may read other phases
        auto = self.segmentation.for_exam({r: u.datasets for r, u in winners.items()}) if self.segmentation else None
        results = [self._run_recipe(recipe, exam, winners, base, auto) for recipe in candidates]
        if any(r.prediction is not None for r in results):
            return [r if r.prediction is not None else _unreported(r) for r in results]
        if len(results) == 1:
            return results
        return [*map(_unreported, results), self._nothing_ran(results, modalities, base)]

    def _run_recipe(self, recipe: Recipe, exam, winners, base, auto=None) -> RecipeResult:
        model = self.registry.get(recipe.name)
        ident = self.identity(recipe.name)
        common = dict(base, recipe=recipe.name, endpoint=recipe.endpoint, capture_window=recipe.capture_window)
        qualified, why = recipe.qualifies(winners)
        if not qualified:
            unknown = [u.uid for u in exam.units if u.features.get("timing_phase") == "unknown"]
            if unknown:
                why += f"; contrast timing undetermined for {', '.join(unknown)}"
            return RecipeResult(**common, model=ident, not_evaluated=NotEvaluated(NO_SERIES, (why,)))
        inputs = ExamInputs(
            series={role: tuple(winners[role].datasets) for role in recipe.requires},
            exam=tuple(ds for u in exam.units for ds in u.datasets), clinical=self.clinical,
            patient_id=exam.patient_id, study_uids=tuple(exam.study_uids), auto_roi=auto,
        )
        mark = auto.mark() if auto is not None else 0
        try:
            prepared = recipe.prepare(inputs)
            out = prepared if isinstance(prepared, NotEvaluated) else recipe.predict(prepared, _Runner(self, model))
        except Exception as exc:  # noqa: BLE001 - reported as a failed outcome, with UIDs only
            log.exception("recipe %s failed for study %s", recipe.name, ",".join(exam.study_uids))
            out = NotEvaluated(FAILED, (type(exc).__name__,))
        if isinstance(out, Prediction):
            calibration = model.variants[out.variant].calibration if out.variant in model.variants else None
            if calibration is not None:
                out = calibrated(out, calibration)
            seg = None
            if auto is not None and str(out.roi.get("source", "")).startswith(AUTOMATIC):
                seg = auto.segmentation(out.series_uid, since=mark)  # the one this recipe's ROI came from
            return RecipeResult(**common, model=self.identity(recipe.name, out.variant), prediction=out,
                                segmentation=seg)
        return RecipeResult(**common, model=ident, not_evaluated=out)

    def _nothing_ran(self, results: list[RecipeResult], modalities, base) -> RecipeResult:
        """One result for an exam no recipe could evaluate: why, per candidate recipe."""
        if results:
            not_run = tuple((f"{r.recipe} {r.model.get('model_version', '')}".strip(),
                             f"{r.outcome}" + (f" ({'; '.join(r.reasons)})" if r.reasons else "")) for r in results)
        else:
            served = ", ".join(f"{r.name} ({'/'.join(sorted(r.modalities))})" for r in self.recipes) or "none"
            shown = "/".join(sorted(m for m in modalities if m in ("CT", "MR"))) or "/".join(sorted(modalities))
            not_run = (("", f"no served recipe reads {shown or 'these'} exams (served: {served})"),)
        training = "; ".join(sorted({str(r.model.get("training_data", "")) for r in results} - {""}))
        model = {"recipe": "", "name": "mvi-node", "model_version": __version__, "sha256": "",
                 "intended_use": "Triage of liver exams to the MVI recipes below; each recipe's model card "
                                 "states its own intended use.", "training_data": training}
        reason = NotEvaluated(NO_RECIPE, tuple(f"{r}: {w}" if r else w for r, w in not_run))
        return RecipeResult(**base, recipe="", model=model, not_evaluated=reason, not_run=not_run)


def calibrated(pred: Prediction, calibration: Calibration) -> Prediction:
    """Every probability of ``pred`` through the model's calibration (monotone, so the
    ranking is kept); decisions against the manifest's threshold, which is on that scale.
    Class probabilities of a multi-class endpoint follow: the first class (the negative
    one) becomes 1 - p, the others are scaled to sum to p and keep their ratios."""
    thr = pred.threshold
    findings = tuple(replace(
        f, probability=calibration.apply(f.probability), decision=calibration.apply(f.probability) >= thr,
        key_slices=tuple(replace(k, probability=round(calibration.apply(k.probability), 6)) for k in f.key_slices),
        class_probabilities=_scaled_classes(f.class_probabilities, float(calibration.apply(f.probability))),
    ) for f in pred.findings)
    p = calibration.apply(pred.probability)
    return replace(pred, probability=p, decision=p >= thr, findings=findings, raw_probability=pred.probability,
                   class_probabilities=_scaled_classes(pred.class_probabilities, float(p)))


def _scaled_classes(classes: Mapping[str, float], p: float) -> Mapping[str, float]:
    if not classes:
        return classes
    names = list(classes)
    positive = sum(float(classes[n]) for n in names[1:])
    scale = p / positive if positive > 0 else 0.0
    out = {names[0]: round(1.0 - p, 6)}
    out.update({n: round(float(classes[n]) * scale if positive > 0 else p / (len(names) - 1), 6) for n in names[1:]})
    return MappingProxyType(out)


def _unreported(result: RecipeResult) -> RecipeResult:
    return replace(result, reported=False)


def infer_path(path: Path | str, engine: Engine) -> dict[str, Any]:
    """Selection + ROI + inference for every exam under ``path`` (the ``infer`` command)."""
    from mvi_node.select.engine import select_path

    studies = [r for exam in select_path(Path(path)) for r in engine.run_exam(exam)]
    return {"studies": studies}
