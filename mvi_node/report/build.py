"""From a :class:`ReportInput` to the DICOM objects that go back to PACS, and onto disk."""

from __future__ import annotations

import io
from pathlib import Path

from pydicom.dataset import Dataset

from mvi_node.report.inputs import ReportInput
from mvi_node.report.sc import build_scs
from mvi_node.report.sr import build_sr
from mvi_node.report.uids import ResultUIDs


def result_uids(inp: ReportInput) -> ResultUIDs:
    """UIDs keyed by the source exam (study + sorted source series) and the model."""
    if not inp.evidence:
        raise ValueError("report input has no evidence instance (patient/study identity unknown)")
    study = str(inp.evidence[0].StudyInstanceUID)
    series = {str(ds.SeriesInstanceUID) for ds in inp.evidence}
    for lesion in inp.lesions:
        series.update(str(s.source.SeriesInstanceUID) for s in lesion.slices)
    return ResultUIDs.of(study, series, inp.model.uid_key, inp.model.recipe, inp.version)


def build_outputs(inp: ReportInput, n_sc: int = 3) -> list[Dataset]:
    """The SR first, then up to ``n_sc`` Grad-CAM secondary captures (none when the
    exam was not evaluated), all in the source study."""
    uids = result_uids(inp)
    return [build_sr(inp, uids), *build_scs(inp, uids, n_sc)]


def content_digest(datasets: list[Dataset]) -> str:
    """What a result says, without its UIDs and times: the SR's content tree and each
    capture's pixels and comments. Equal digests: nothing new to send."""
    import hashlib
    import json

    h = hashlib.sha256()
    for ds in datasets:
        if "ContentSequence" in ds:
            items = [_without_uids(item.to_json_dict()) for item in ds.ContentSequence]
            h.update(json.dumps(items, sort_keys=True).encode())
        if "PixelData" in ds:
            h.update(hashlib.sha256(ds.PixelData).digest())
            h.update(str(ds.get("ImageComments", "")).encode())
    return h.hexdigest()


# UI (UIDs: tracking UIDs and references change with the version) and DA/TM/DT values
_VOLATILE_VR = {"UI", "DA", "TM", "DT"}


def _without_uids(node):
    if isinstance(node, dict):
        if node.get("vr") in _VOLATILE_VR:
            return None
        return {k: _without_uids(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_without_uids(v) for v in node]
    return node


def save_outputs(datasets: list[Dataset], folder: Path | str) -> list[Path]:
    """Write each object durably as ``<SOPInstanceUID>.dcm`` (DICOM file format); return the paths."""
    from mvi_node.common.durable import write_durably

    Path(folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        path = Path(folder) / f"{ds.SOPInstanceUID}.dcm"
        write_durably(path, buffer.getvalue())
        paths.append(path)
    return paths
