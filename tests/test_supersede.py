"""Results that change are superseded the IHE way; results that don't are not resent."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

from pydicom import dcmread

from conftest import storescu
from mvi_node.synth import make_exam
from test_e2e_results import _texts, _valid


def _received(scp, n: int, timeout: float = 90) -> list:
    return [(f, dcmread(f)) for f in scp.wait_for(n, timeout, settle=1.0)]


def test_a_late_annotation_supersedes_the_result_with_a_rejection_note(node, tmp_path, pacs):
    exam = tmp_path / "exam"
    manifest = make_exam(exam, "ct", seed=321, index=0, mvi=True, matrix=128, hard_cases="none", annotations="seg",
                         seg_on="arterial")
    seg_uid = next(u for u, r in manifest["series"].items() if r == "seg")
    first, late = tmp_path / "first", tmp_path / "late"
    for f in (exam / "dicom").rglob("*.dcm"):
        part = late if str(dcmread(f, stop_before_pixels=True).SeriesInstanceUID) == seg_uid else first
        dst = part / f.relative_to(exam)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dst)
    # without the automatic segmentation (pinned away) the first round has no ROI at all
    n = node(quiet=1.0, env={**pacs.as_destination(),
                             "MVI_MODELS__PINS": json.dumps({"liver_tumor_seg": "none"})})
    storescu(n.port, first, extra=["-R"])
    [(_f, sr1)] = _received(pacs, 1)
    assert "no tumour ROI" in _texts(sr1)
    # the outline arrives later: round 2 of the study
    storescu(n.port, late, extra=["-R"])
    got = _received(pacs, 1 + 1 + 3 + 1)  # + new SR, 3 captures, the rejection note
    srs = [d for _f, d in got if d.Modality == "SR"]
    kos = [(f, d) for f, d in got if d.Modality == "KO"]
    assert len(srs) == 2 and len(kos) == 1 and len(got) == 6
    sr2 = next(d for d in srs if d.SOPInstanceUID != sr1.SOPInstanceUID)
    assert "MVI" in sr2.ContentDescription and "not evaluated" not in sr2.ContentDescription
    pred = sr2.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert pred.ReferencedSOPInstanceUID == sr1.SOPInstanceUID
    path, note = kos[0]
    _valid(path)
    assert note.ConceptNameCodeSequence[0].CodeValue == "113001"  # Rejected for Quality Reasons
    rejected = {str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for i in note.ContentSequence
                if i.ValueType in ("COMPOSITE", "IMAGE")}
    assert rejected == {str(sr1.SOPInstanceUID)}
    jobs = [j for j in n.status_jobs() if j["kind"] == "study"]
    import httpx

    details = [httpx.get(f"http://127.0.0.1:{n.admin_port}/jobs/{j['id']}", timeout=10).json() for j in jobs]
    outputs = [r["outputs"] for d in details for e in d["result"]["inference"] for r in e if "outputs" in r]
    assert any(o.get("supersedes") == str(sr1.SOPInstanceUID) and o["version"] == 2 for o in outputs)
    # an operator retry of the second round says the same thing: nothing new reaches PACS
    round2 = max(jobs, key=lambda j: j["id"])
    subprocess.run([sys.executable, "-m", "mvi_node", "dispatch", "retry", str(round2["id"]),
                    "--data-dir", str(n.data_dir)], check=True, capture_output=True)
    time.sleep(4)
    assert len(pacs.received()) == 6
