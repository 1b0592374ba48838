"""From an inference outcome to the DICOM objects that go back to PACS, and onto disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset

from mvi_node.report.identity import ModelIdentity, result_uids
from mvi_node.report.gradcam_sc import build_scs
from mvi_node.report.tid1500 import build_sr
from mvi_node.stage.durable import write_durably


def _exam_datasets(exam) -> list[Dataset]:
    return [ds for unit in exam.units for ds in unit.datasets]


def _target_study(res: Any, datasets: list[Dataset]) -> list[Dataset]:
    """The series the result is about, or (not evaluated) the first image of the exam."""
    if res.series_instance_uid:
        mine = [ds for ds in datasets if str(ds.SeriesInstanceUID) == res.series_instance_uid]
        if mine:
            return mine
    images = [ds for ds in datasets if "Rows" in ds] or datasets
    return images[:1]


def build_results(res: Any, exam, secondary_captures: int = 3) -> list[Dataset]:
    """SR first, then up to ``secondary_captures`` Grad-CAM SCs, all in the source study."""
    datasets = _exam_datasets(exam)
    if not datasets:
        return []
    target = _target_study(res, datasets)
    model = ModelIdentity.from_result(res.model)
    study_uid = str(target[0].StudyInstanceUID)
    uids = result_uids(study_uid, sorted({str(ds.SeriesInstanceUID) for ds in target}), res.recipe, model.sha256)
    by_sop = {str(ds.SOPInstanceUID): ds for ds in target}
    used = [by_sop[s["sop_instance_uid"]] for s in res.slice_info if s["sop_instance_uid"] in by_sop]
    evidence = used or target[:1]
    key, box = None, None
    if res.outcome == "ok" and res.slice_info:
        best = max(res.slice_info, key=lambda s: s["probability"])
        key, box = by_sop.get(best["sop_instance_uid"]), best.get("crop_box")
    sr = build_sr(res, model, evidence, key, box, uids)
    pixels = {sop: (ds if "PixelData" in ds else dcmread(ds.filename)) for sop, ds in
              ((s["sop_instance_uid"], by_sop[s["sop_instance_uid"]]) for s in res.slice_info if s["sop_instance_uid"] in by_sop)}
    scs = build_scs(res, model, pixels, uids, secondary_captures) if res.outcome == "ok" else []
    return [sr, *scs]


def save_outputs(datasets: list[Dataset], folder: Path) -> list[Path]:
    """Write each object durably as ``<SOPInstanceUID>.dcm``; return the paths."""
    import io

    paths = []
    for ds in datasets:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        path = Path(folder) / f"{ds.SOPInstanceUID}.dcm"
        write_durably(path, buffer.getvalue())
        paths.append(path)
    return paths
