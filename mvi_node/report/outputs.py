"""Adapter: the engine's ``RecipeResult`` + the selected exam -> :class:`ReportInput`.

The only module of the report stage that knows the engine's result fields (read by
name, never imported); the SR and SC builders take plain :mod:`mvi_node.report.inputs`
values. Whatever the recipe, its endpoint names the concepts and its exam's modality
the procedure.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from mvi_node.common.frames import lookup, view_key
from mvi_node.report.build import build_outputs, save_outputs
from mvi_node.report.inputs import (EndpointText, LesionResult, ModelIdentity, OtherLesion, PlanarRegion, ReportInput,
                                    SliceResult)
from mvi_node.report.seg import SegUIDs, build_seg, roi_note

__all__ = ["build_results", "save_outputs", "report_input_from_engine", "model_identity", "enclosing_circle"]


def model_identity(model: dict[str, Any]) -> ModelIdentity:
    """From ``ModelInfo.identity(variant)`` (recipe, model_version, variant, sha256, ...)."""
    training = str(model.get("training_data", ""))
    intended = str(model.get("intended_use", ""))
    return ModelIdentity(
        recipe=str(model.get("recipe", "")),
        name=str(model.get("name", "") or model.get("recipe", "")),
        version=str(model.get("model_version", "") or model.get("version", "")),
        sha256=str(model.get("sha256", "")),
        intended_use=intended,
        training_data=training,
        synthetic="synthetic" in (training + " " + intended).lower(),
        variant=str(model.get("variant", "")),
        precision=str(model.get("precision", "") or ""),
        calibration=str(model.get("calibration", "") or ""),
        calibration_digest=str(model.get("calibration_digest", "") or ""),
    )


def enclosing_circle(mask2d: np.ndarray) -> PlanarRegion | None:
    """The circle around an ROI on one slice (centre of its bounding box, radius to the
    farthest pixel corner), in image-relative pixel coordinates."""
    rows, cols = np.nonzero(mask2d)
    if rows.size == 0:
        return None
    cr, cc = (rows.min() + rows.max() + 1) / 2.0, (cols.min() + cols.max() + 1) / 2.0
    radius = float(np.sqrt(((np.abs(rows + 0.5 - cr) + 0.5) ** 2 + (np.abs(cols + 0.5 - cc) + 0.5) ** 2).max()))
    return PlanarRegion.circle(float(cc), float(cr), radius)


def _box(box: dict[str, float] | None) -> tuple[float, float, float, float] | None:
    if not box:
        return None
    hr, hc = box["edge_rows"] / 2.0, box["edge_cols"] / 2.0
    return (box["center_row"] - hr, box["center_col"] - hc, box["center_row"] + hr, box["center_col"] + hc)


def endpoint_text(endpoint: Any) -> EndpointText:
    """A recipe's endpoint (``mvi_node.infer.recipe.Endpoint``) as the report names it."""
    if endpoint is None:
        return EndpointText()
    return EndpointText(concept=endpoint.concept, positive=endpoint.positive, negative=endpoint.negative,
                        finding_type=endpoint.finding_type, title=endpoint.title, present=endpoint.present,
                        absent=endpoint.absent)


def _lesion(finding: Any, threshold: float, by_sop: dict[str, Dataset]) -> LesionResult:
    def image(s: Any) -> Dataset | None:  # by (SOP, frame): frames of one instance share the SOP
        return lookup(by_sop, s.sop_instance_uid, getattr(s, "frame_number", None))

    # headers: the SR cites every key slice, the captures (sc.py) read the pixels of the
    # few they show through frame_pixels, so a tumour over 40 slices costs 3 pixel reads
    slices = [SliceResult(source=image(s), probability=float(s.probability),
                          cam=s.explanation, crop_box=_box(s.crop_box),
                          roi_mask=np.asarray(s.roi_mask, bool) if s.roi_mask is not None else None,
                          label=str(getattr(s, "label", "") or ""))
              for s in finding.key_slices if image(s) is not None]
    key = max(slices, key=lambda sl: sl.probability) if slices else None
    region = enclosing_circle(key.roi_mask) if key is not None and key.roi_mask is not None else None
    if region is None and key is not None and key.crop_box is not None:
        region = PlanarRegion.box(*key.crop_box)
    return LesionResult(
        tracking_id=finding.tracking_id, probability=float(finding.probability), threshold=float(threshold),
        predicted_mvi=bool(finding.decision), key_slice=key.source if key else None,
        max_diameter_mm=finding.max_diameter_mm, roi_region=region, slices=slices,
        grade_probabilities=dict(finding.class_probabilities) or None,
        scores=[(s.concept, float(s.value), str(s.basis)) for s in getattr(finding, "scores", ())],
    )


def exam_notes(exam) -> list[str]:
    """What the SR says about how complete the exam was when the result was computed."""
    pending = len(getattr(exam, "pending_studies", ()) or ())
    if not pending:
        return []
    parts = "1 related study was" if pending == 1 else f"{pending} related studies were"
    return [f"Exam incomplete: {parts} still being received when this result was computed "
            "(after the exam wait); a later version of this result will supersede it"]


def report_input_from_engine(res: Any, exam) -> ReportInput | None:
    """Fill a :class:`ReportInput` from an engine ``RecipeResult`` and its exam (units of
    datasets); None when the exam holds no instance at all."""
    datasets = [ds for unit in exam.units for ds in unit.datasets]
    if not datasets:
        return None
    target = []
    if res.series_instance_uid:
        target = [ds for ds in datasets if str(ds.SeriesInstanceUID) == res.series_instance_uid]
    if not target:
        target = ([ds for ds in datasets if "Rows" in ds] or datasets)[:1]
    pred = res.prediction
    model = model_identity(res.model or {})
    used = {}
    if pred is not None and pred.factors_used:
        used = {k: (f"{v} ({pred.factors_origin[k]})" if pred.factors_origin.get(k) else v)
                for k, v in pred.factors.items() if v is not None}
    detail = "; ".join(res.reasons or [])
    if res.clinical_missing:
        detail = (detail + "; " if detail else "") + "missing clinical factors: " + ", ".join(res.clinical_missing)
    base = dict(model=model, clinical_factors_used=used, image_only=not res.clinical_factors_used,
                outcome=res.outcome, outcome_detail=detail, endpoint=endpoint_text(res.endpoint),
                procedure=res.procedure, window=res.capture_window, not_run=tuple(res.not_run),
                exam_notes=exam_notes(exam))
    # key slices may come from every input series of a multi-sequence recipe (MR)
    by_sop = {view_key(ds): ds for ds in datasets if "Rows" in ds}
    lesions = [_lesion(f, pred.threshold, by_sop) for f in pred.findings] if pred is not None else []
    lesions = [l for l in lesions if l.slices]
    if not lesions:
        return ReportInput(evidence=target[:1], **base)
    evidence = list({view_key(s.source): by_sop[view_key(s.source)] for l in lesions for s in l.slices}.values())
    return ReportInput(evidence=evidence, lesions=lesions, **base)


#: further automatically found lesions the SR reports besides the evaluated one
OTHER_LESIONS = 3


def build_results(res: Any, exam, secondary_captures: int = 3, version: int = 1,
                  predecessors: list[Dataset] | tuple = (), other_lesions: int = OTHER_LESIONS) -> list:
    """SR first, then up to ``secondary_captures`` Grad-CAM SCs, all in the source study;
    when the ROI came from the automatic segmentation, its DICOM SEG last.
    ``version`` > 1 supersedes the earlier version whose SR is in ``predecessors``."""
    inp = report_input_from_engine(res, exam)
    if inp is None:
        return []
    inp.version, inp.predecessors = version, list(predecessors)
    segmentation = getattr(res, "segmentation", None)
    if segmentation is None or not inp.evaluated:
        return build_outputs(inp, secondary_captures)
    uids = SegUIDs(segmentation, version)
    seg = build_seg(segmentation, version)
    inp.roi_note = roi_note(segmentation, uids.sop)
    main = segmentation.lesions[0]
    inp.lesions[0].tracking_uid, inp.lesions[0].volume_ml = uids.tracking(main.rank), round(main.volume_ml, 2)
    inp.other_lesions = [OtherLesion(l.tracking_id, uids.tracking(l.rank), l.volume_ml, l.max_diameter_mm)
                         for l in segmentation.lesions[1:1 + max(0, other_lesions)]]
    return [*build_outputs(inp, secondary_captures), seg]
