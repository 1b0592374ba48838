"""Adapter: the ONNX engine's ``StudyResult`` + the staged exam -> :class:`ReportInput`.

The only module of the report stage that knows the engine's result fields; the SR and
SC builders take plain :mod:`mvi_node.report.inputs` values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset

from mvi_node.report.build import build_outputs, save_outputs
from mvi_node.report.inputs import LesionResult, ModelIdentity, PlanarRegion, ReportInput, SliceResult

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


def _with_pixels(ds: Dataset) -> Dataset:
    return ds if "PixelData" in ds else dcmread(ds.filename)


def report_input_from_engine(res: Any, exam) -> ReportInput | None:
    """Fill a :class:`ReportInput` from an engine ``StudyResult`` and its exam (units of
    datasets); None when the exam holds no instance at all."""
    datasets = [ds for unit in exam.units for ds in unit.datasets]
    if not datasets:
        return None
    target = []
    if res.series_instance_uid:
        target = [ds for ds in datasets if str(ds.SeriesInstanceUID) == res.series_instance_uid]
    if not target:
        target = ([ds for ds in datasets if "Rows" in ds] or datasets)[:1]
    model = model_identity(res.model or {})
    factors = {k: v for k, v in (res.factors or {}).items() if v is not None}
    used = {k: (f"{v} ({res.factors_origin[k]})" if (res.factors_origin or {}).get(k) else v)
            for k, v in factors.items()} if res.clinical_factors_used else {}
    detail = "; ".join(res.reasons or [])
    if getattr(res, "clinical_missing", None):
        detail = (detail + "; " if detail else "") + "missing clinical factors: " + ", ".join(res.clinical_missing)
    base = dict(model=model, clinical_factors_used=used, image_only=not res.clinical_factors_used,
                outcome=res.outcome, outcome_detail=detail)
    by_sop = {str(ds.SOPInstanceUID): ds for ds in target}
    info = [s for s in (res.slice_info or []) if s["sop_instance_uid"] in by_sop]
    if res.outcome != "ok" or not info or res.probability is None:
        return ReportInput(evidence=target[:1], **base)
    slices = []
    for i, s in enumerate(res.slice_info):
        if s["sop_instance_uid"] not in by_sop:
            continue
        mask = None
        if res.roi_mask is not None and 0 <= s.get("slice_index", -1) < len(res.roi_mask):
            mask = np.asarray(res.roi_mask[s["slice_index"]], bool)
        cam = res.gradcam[i] if res.gradcam is not None and i < len(res.gradcam) else None
        slices.append(SliceResult(source=_with_pixels(by_sop[s["sop_instance_uid"]]), probability=float(s["probability"]),
                                  cam=cam, crop_box=_box(s.get("crop_box")), roi_mask=mask))
    key = max(slices, key=lambda sl: sl.probability)
    region = enclosing_circle(key.roi_mask) if key.roi_mask is not None else None
    if region is None and key.crop_box is not None:
        region = PlanarRegion.box(*key.crop_box)
    mtd = (res.factors or {}).get("mtd_mm")
    lesion = LesionResult(
        tracking_id="Tumor 1", probability=float(res.probability), threshold=float(res.threshold),
        predicted_mvi=bool(res.predicted_mvi), key_slice=key.source, max_diameter_mm=float(mtd) if mtd else None,
        roi_region=region, slices=slices,
    )
    evidence = [by_sop[s["sop_instance_uid"]] for s in info]
    return ReportInput(evidence=evidence, lesions=[lesion], **base)


def build_results(res: Any, exam, secondary_captures: int = 3) -> list:
    """SR first, then up to ``secondary_captures`` Grad-CAM SCs, all in the source study."""
    inp = report_input_from_engine(res, exam)
    return build_outputs(inp, secondary_captures) if inp is not None else []
