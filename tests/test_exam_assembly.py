"""An exam sent in pieces (its tumour outline as a second study, later) gets one result
built from both, when the site holds study jobs for ``exam_wait_seconds``."""

from __future__ import annotations

import json
import shutil
import time

from pydicom import dcmread
from pydicom.uid import generate_uid

from conftest import free_port, storescu
from mvi_node.synth import make_exam
from test_dispatch import StoreSCP
from test_e2e_results import _texts


def test_an_outline_sent_as_a_second_study_later_makes_one_result_from_both(node, tmp_path):
    exam = tmp_path / "exam"
    manifest = make_exam(exam, "ct", seed=654, index=0, mvi=True, matrix=128, hard_cases="none", annotations="seg",
                         seg_on="arterial")
    seg_uid = next(u for u, r in manifest["series"].items() if r == "seg")
    images, outline = tmp_path / "images", tmp_path / "outline"
    other_study = generate_uid()
    for f in (exam / "dicom").rglob("*.dcm"):
        ds = dcmread(f)
        if str(ds.SeriesInstanceUID) == seg_uid:  # the outline, filed under its own study
            ds.StudyInstanceUID = other_study
            (outline / f.name).parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(outline / f.name, enforce_file_format=True)
        else:
            dst = images / f.relative_to(exam)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dst)
    scp = StoreSCP(free_port(), tmp_path / "pacs").start()
    try:
        n = node(quiet=1.0, env={"MVI_DISPATCH__DESTINATIONS": json.dumps([f"PACS@127.0.0.1:{scp.port}"]),
                                 "MVI_COMPLETION__EXAM_WAIT_SECONDS": "8"})
        storescu(n.port, images, extra=["-R"])
        time.sleep(4)  # the first study is complete and held; the outline comes now
        storescu(n.port, outline, extra=["-R"])
        deadline = time.monotonic() + 60
        while len(scp.received()) < 4 and time.monotonic() < deadline:
            time.sleep(0.25)
        time.sleep(12)  # the outline study's own job runs too: it must add nothing
        got = [dcmread(f) for f in scp.received()]
    finally:
        scp.stop()
    srs = [d for d in got if d.Modality == "SR"]
    assert len(srs) == 1 and len(got) == 4, [d.SeriesDescription for d in got]  # one SR + 3 captures, no rejection
    assert "no tumour ROI" not in _texts(srs[0]) and "MVI" in srs[0].ContentDescription
