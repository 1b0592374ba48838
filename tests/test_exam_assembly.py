"""An exam sent in pieces (its tumour outline as a second study, 30 s later) gets one result
built from both, when the site holds study jobs for ``exam_wait_seconds``."""

from __future__ import annotations

import shutil
import time

from pydicom import dcmread
from pydicom.uid import generate_uid

from conftest import storescu
from mvi_node.synth import make_exam
from test_e2e_results import _texts


def test_an_outline_sent_as_a_second_study_later_makes_one_result_from_both(node, tmp_path, pacs):
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
    n = node(quiet=1.0, env={**pacs.as_destination(),
                             "MVI_COMPLETION__EXAM_WAIT_SECONDS": "40"})
    storescu(n.port, images, extra=["-R"])
    time.sleep(30)  # the first study is complete and held; the outline comes 30 s later
    storescu(n.port, outline, extra=["-R"])
    pacs.wait_for(4, settle=0)
    # the outline study's own job runs too (held 40 s after its completion): it must add nothing
    deadline = time.monotonic() + 90
    while sum(j["kind"] == "study" and j["state"] == "done" for j in n.status_jobs()) < 2 \
            and time.monotonic() < deadline:
        time.sleep(0.5)
    assert sum(j["kind"] == "study" and j["state"] == "done" for j in n.status_jobs()) == 2
    time.sleep(3)  # its dispatch, if it had queued any
    got = [dcmread(f) for f in pacs.received()]
    srs = [d for d in got if d.Modality == "SR"]
    assert len(srs) == 1 and len(got) == 4, [d.SeriesDescription for d in got]  # one SR + 3 captures, no rejection
    assert "no tumour ROI" not in _texts(srs[0]) and "MVI" in srs[0].ContentDescription


def test_a_part_still_arriving_after_the_exam_wait_is_named_in_the_sr_and_superseded(node, tmp_path, pacs):
    """The exam wait runs out while a second study of the exam is still being received:
    the job runs with what it has, its SR says the exam was incomplete, and the part's
    own job, once it completes, supersedes that result (SR v2 + rejection note)."""
    exam = tmp_path / "exam"
    manifest = make_exam(exam, "ct", seed=655, index=0, mvi=True, matrix=128, hard_cases="none", annotations="seg",
                         seg_on="arterial")
    roles = manifest["series"]
    later = {u for u, r in roles.items() if r == "seg" or "delayed" in str(r) or "equilibrium" in str(r)}
    assert any(roles[u] != "seg" for u in later), roles  # a phase travels with the outline
    images, part2 = tmp_path / "images", tmp_path / "part2"
    other_study = generate_uid()
    trickle = []
    for f in sorted((exam / "dicom").rglob("*.dcm")):
        ds = dcmread(f)
        if str(ds.SeriesInstanceUID) in later:
            ds.StudyInstanceUID = other_study
            dst = part2 / f"{len(trickle):04d}" / f.name
            dst.parent.mkdir(parents=True)
            ds.save_as(dst, enforce_file_format=True)
            trickle.append((str(ds.SeriesInstanceUID) != next(u for u, r in roles.items() if r == "seg"), dst.parent))
        else:
            dst = images / f.relative_to(exam)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dst)
    trickle.sort()  # the outline first, then the phase one instance at a time
    n = node(quiet=2.0, env={**pacs.as_destination(),
                             "MVI_COMPLETION__EXAM_WAIT_SECONDS": "3"})
    storescu(n.port, images, extra=["-R"])
    start, sent = time.monotonic(), 0
    for _phase, folder in trickle:  # study 2 stays open (never 2 s quiet) well past the wait
        storescu(n.port, folder, extra=["-R"])
        sent += 1
        if time.monotonic() - start > 12:
            break
        time.sleep(0.5)
    if sent < len(trickle):  # then the rest at once, and the part completes
        storescu(n.port, *[folder for _phase, folder in trickle[sent:]], extra=["-R"])
    deadline = time.monotonic() + 90
    while not any(dcmread(f, stop_before_pixels=True).Modality == "KO" for f in pacs.received()) \
            and time.monotonic() < deadline:
        time.sleep(0.25)
    time.sleep(2)
    got = [dcmread(f) for f in pacs.received()]
    srs = sorted((d for d in got if d.Modality == "SR"), key=lambda d: "PredecessorDocumentsSequence" in d)
    assert len(srs) == 2, [(d.Modality, d.SeriesDescription) for d in got]
    first, second = srs
    assert "Exam incomplete: 1 related study was still being received" in _texts(first)
    assert "Exam incomplete" not in _texts(second)
    pred = second.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert pred.ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert any(d.Modality == "KO" for d in got)
    jobs = [j for j in n.status_jobs() if j["kind"] == "study"]
    import httpx

    details = [httpx.get(f"http://127.0.0.1:{n.admin_port}/jobs/{j['id']}", timeout=10).json() for j in jobs]
    pending = [d["result"]["selection"].get("pending_studies") for d in details]
    assert [other_study] in pending  # the job result names the part it ran without
