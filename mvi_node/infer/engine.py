"""ONNX Runtime inference: one session per model variant, reused across jobs.

Providers are tried in the configured order (default CUDA, then CPU) among those the
installed onnxruntime offers, so the same code runs with ``onnxruntime`` or
``onnxruntime-gpu``. A patient's tumour slices go through the graph in batches; the
patient score is the max over slices (seed 000) and the decision uses the manifest's
threshold. The clinical variant runs only when every factor is known, else the
image-only one, and the result says which and what was missing.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mvi_node.clinical import ClinicalSource, NullClinicalSource
from mvi_node.infer.manifest import ModelInfo
from mvi_node.infer.registry import ModelRegistry
from mvi_node.metrics import observe_stage
from mvi_node.roi import NoRoi

log = logging.getLogger(__name__)

DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
OK, NO_ROI, NO_SERIES, NO_MODEL, FAILED = "ok", "no tumour ROI", "no eligible series", "no model", "failed"
NO_FACTORS = "clinical factors missing"


def pick_providers(preferred: Sequence[str] = DEFAULT_PROVIDERS) -> list[str]:
    """``preferred`` filtered by what this onnxruntime build offers; CPU always last resort."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    chosen = [p for p in preferred if p in available]
    return chosen or ["CPUExecutionProvider"]


@dataclass
class StudyResult:
    """One exam x recipe. ``gradcam`` (N, 256, 256) in 0..1 matches ``slice_info`` order."""

    patient_id: str
    study_instance_uids: list[str]
    recipe: str
    outcome: str
    model: dict[str, Any] = field(default_factory=dict)  # ModelInfo.identity(variant)
    probability: float | None = None
    predicted_mvi: bool | None = None
    threshold: float | None = None
    slice_info: list[dict[str, Any]] = field(default_factory=list)
    roi: dict[str, Any] = field(default_factory=dict)
    clinical_factors_used: bool = False
    clinical_missing: list[str] = field(default_factory=list)
    series_instance_uid: str | None = None
    reasons: list[str] = field(default_factory=list)
    gradcam: np.ndarray | None = None
    #: the seven factors' values (None: unknown) and where each came from, for the report
    factors: dict[str, Any] = field(default_factory=dict)
    factors_origin: dict[str, str] = field(default_factory=dict)
    #: the tumour ROI on the target series grid (slice, row, col), for outlines in the report
    roi_mask: np.ndarray | None = None

    def as_dict(self) -> dict[str, Any]:
        """The ``mvi-node infer --json`` record (maps summarised, not inlined)."""
        return {
            "patient_id": self.patient_id, "study_instance_uids": self.study_instance_uids,
            "recipe": self.recipe, "outcome": self.outcome,
            "model_version": self.model.get("model_version"), "model_sha256": self.model.get("sha256"),
            "variant": self.model.get("variant"), "intended_use": self.model.get("intended_use"),
            "training_data": self.model.get("training_data"),
            "probability": self.probability, "predicted_mvi": self.predicted_mvi, "threshold": self.threshold,
            "slices": len(self.slice_info), "roi_source": self.roi.get("source"), "roi": self.roi,
            "clinical_factors_used": self.clinical_factors_used, "clinical_factors_missing": self.clinical_missing,
            "reasons": self.reasons,
            "gradcam": {"series_instance_uid": self.series_instance_uid, "map_size": [256, 256],
                        "map_range": "0..1 per slice (min-max)", "slices": self.slice_info},
        }


class Engine:
    """Sessions are created lazily, once per (model folder, variant), and kept."""

    def __init__(self, registry: ModelRegistry, clinical: ClinicalSource | None = None,
                 providers: Sequence[str] = DEFAULT_PROVIDERS, batch_size: int = 64, threads: int = 0) -> None:
        self.registry = registry
        self.clinical = clinical or NullClinicalSource()
        self.providers = pick_providers(providers)
        self.batch_size = batch_size
        self.threads = threads
        self._sessions: dict[tuple[Path, str], Any] = {}
        self._lock = threading.Lock()
        from mvi_node.recipes import RECIPES, recipe_module

        for name in registry.models:
            if name in RECIPES:
                recipe_module(name).register_roles()

    def session(self, model: ModelInfo, variant: str):
        import onnxruntime as ort

        key = (model.folder, variant)
        with self._lock:
            if key not in self._sessions:
                opts = ort.SessionOptions()
                if self.threads:
                    opts.intra_op_num_threads = self.threads
                self._sessions[key] = ort.InferenceSession(str(model.variants[variant].path), opts,
                                                           providers=self.providers)
            return self._sessions[key]

    def predict(self, model: ModelInfo, variant: str, images: np.ndarray,
                clinical: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Per-slice probabilities (N,) and Grad-CAM maps (N, 256, 256), batched."""
        sess = self.session(model, variant)
        probs, maps = [], []
        for i in range(0, len(images), self.batch_size):
            x = np.ascontiguousarray(images[i:i + self.batch_size], dtype=np.float32)
            feed = {"image": x}
            if model.variants[variant].needs_clinical:
                feed["clinical"] = np.repeat(np.asarray(clinical, np.float32)[None], len(x), 0)
            p, m = sess.run(["probability", "gradcam"], feed)
            probs.append(p)
            maps.append(m)
        return np.concatenate(probs), np.concatenate(maps)

    def run_exam(self, exam) -> list[StudyResult]:
        """All recipes an exam (``mvi_node.select`` Exam) qualifies for; never silent."""
        from mvi_node.select import recipes as sel

        winners = exam.winners()
        ok, missing = sel.evaluate({role: u.uid for role, u in winners.items()})
        base = {"patient_id": exam.patient_id, "study_instance_uids": list(exam.study_uids)}
        # a recipe without a served model is not this node's business; an exam nothing fits is
        results = [StudyResult(**base, recipe=m["name"], outcome=NO_SERIES, reasons=[m["why"]],
                               model=self._identity(m["name"]))
                   for m in missing if self.registry.get(m["name"]) is not None]
        if not ok and not results:
            results.append(StudyResult(**base, recipe="", outcome=NO_SERIES,
                                       reasons=[f"{m['name']}: {m['why']}" for m in missing]))
        for q in ok:
            try:
                results.append(self._run_recipe(exam, q["name"], winners, base))
            except Exception as exc:  # noqa: BLE001 - reported as a failed outcome, with UIDs only
                log.exception("recipe %s failed for study %s", q["name"], ",".join(exam.study_uids))
                results.append(StudyResult(**base, recipe=q["name"], outcome=FAILED,
                                           reasons=[f"{type(exc).__name__}"]))
        return results

    def _identity(self, recipe: str) -> dict[str, Any]:
        """Which model would have run: reported even when it could not."""
        model = self.registry.get(recipe)
        return model.identity(next(iter(model.variants))) if model else {}

    def _run_recipe(self, exam, name: str, winners, base) -> StudyResult:
        from mvi_node.recipes import recipe_module

        model = self.registry.get(name)
        if model is None:
            return StudyResult(**base, recipe=name, outcome=NO_MODEL, reasons=[f"no model folder for {name}"])
        rec = recipe_module(name)
        exam_ds = [ds for u in exam.units for ds in u.datasets]
        prepared = rec.prepare(exam_ds, list(winners[rec.ROLE].datasets), self.clinical)
        if isinstance(prepared, NoRoi):
            return StudyResult(**base, recipe=name, outcome=NO_ROI, model=model.identity(next(iter(model.variants))),
                               series_instance_uid=str(winners[rec.ROLE].series_uid), reasons=prepared.reasons)
        try:
            variant = _variant(model, prepared.clinical is not None)
        except ValueError as exc:  # a site model that ships only the clinical variant
            return StudyResult(**base, recipe=name, outcome=NO_FACTORS, model=model.identity(next(iter(model.variants))),
                               clinical_missing=prepared.factors.missing(), reasons=[str(exc)])
        with observe_stage("infer"):
            probs, maps = self.predict(model, variant, prepared.images, prepared.clinical)
        thr = model.variants[variant].threshold
        score = float(probs.max())
        info = [{"sop_instance_uid": sop, "slice_index": int(z), "probability": round(float(p), 6),
                 "crop_box": box.as_dict()}
                for sop, z, p, box in zip(prepared.sop_uids, prepared.crops.slice_indices, probs, prepared.crops.boxes)]
        return StudyResult(
            **base, recipe=name, outcome=OK, model=model.identity(variant), probability=score,
            predicted_mvi=score >= thr, threshold=thr, slice_info=info, roi=prepared.roi.describe(),
            clinical_factors_used=variant == "clinical" and prepared.clinical is not None,
            clinical_missing=prepared.factors.missing(), series_instance_uid=prepared.series_uid, gradcam=maps,
            factors=prepared.factors.as_dict(), factors_origin=dict(prepared.factors.origin),
            roi_mask=np.asarray(prepared.roi.mask, bool),
        )


def _variant(model: ModelInfo, have_clinical: bool) -> str:
    """Clinical variant only with every factor present; a model may ship only one variant."""
    if have_clinical and "clinical" in model.variants:
        return "clinical"
    for name, v in model.variants.items():
        if not v.needs_clinical:
            return name
    raise ValueError(f"model {model.recipe} {model.version} has no image-only variant")


def infer_path(path: Path | str, engine: Engine) -> dict[str, Any]:
    """Selection + ROI + inference for every exam under ``path`` (the ``infer`` command)."""
    from mvi_node.select.engine import select_path

    studies = [r for exam in select_path(Path(path)) for r in engine.run_exam(exam)]
    return {"studies": studies}


def infer_staged(staging_dir: Path | str, study_uid: str, engine: Engine,
                 rules_file: str | Path | None = None) -> list[StudyResult]:
    """The node's job entry: the staged study plus its related sibling studies (phases
    sent as separate studies), selected by ``mvi_node.select.job.staged_exams``."""
    from mvi_node.select.job import staged_exams

    exams, _rules = staged_exams(Path(staging_dir), study_uid, rules_file)
    return [r for exam in exams for r in engine.run_exam(exam)]
