"""Sibling studies of an exam come from the staging index: bounded by a receive window,
keys kept as digests, and (opt-in) one patient's studies close in time are one exam."""

from __future__ import annotations

import sqlite3
import time

from pydicom.uid import generate_uid

from mvi_node.pipeline.siblings import RELATED_WINDOW_S, related_studies
from mvi_node.pipeline.study import selection_report
from mvi_node.stage.index import InstanceRecord, StagingIndex
from select_fixtures import Exam
from test_select_engine import _save

T0 = 36000.0


def _stage(index: StagingIndex, staging, exam: Exam, when: float) -> None:
    for ds in exam.datasets:
        _save(ds, staging / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm")
        index.add(InstanceRecord(str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                                 str(ds.SOPClassUID), "1.2.840.10008.1.2.1", 1000), now=when)


def _exam(patient: str, accession: str, description: str, at: float = T0, frame: str | None = None) -> Exam:
    e = Exam(patient=patient, accession=accession, study_uid=generate_uid())
    if frame:
        e.frame_uid = frame
    e.series(description, time=at)
    for ds in e.datasets:
        ds.StudyDate, ds.StudyTime = "20261201", f"{int(at // 3600):02d}{int(at % 3600 // 60):02d}00"
    return e


def test_siblings_come_from_the_index_within_the_window_and_never_from_other_patients(tmp_path):
    staging, index = tmp_path / "staging", StagingIndex(tmp_path / "index.sqlite3")
    now = time.time()
    me = _exam("P1", "ACC1", "Arterial")
    same_acc = _exam("P1", "ACC1", "Portal venous")
    old = _exam("P1", "ACC1", "Delayed")  # same accession, but staged long before the window
    other_patient = _exam("P2", "ACC1", "Portal venous")
    same_frame = _exam("P1", "ACC9", "Outline", frame=me.frame_uid)
    _stage(index, staging, me, now)
    _stage(index, staging, same_acc, now + 5)
    _stage(index, staging, old, now - RELATED_WINDOW_S - 3600)
    _stage(index, staging, other_patient, now)
    _stage(index, staging, same_frame, now + 30)
    # an unrelated old folder the index does not know is never opened: garbage would not matter
    (staging / "1.2.3.4" / "5.6").mkdir(parents=True)
    (staging / "1.2.3.4" / "5.6" / "7.dcm").write_bytes(b"not dicom")
    headers = [ds for ds in me.datasets]
    got = related_studies(staging, index, me.study_uid, headers)
    assert sorted(got) == sorted([(same_acc.study_uid, "open"), (same_frame.study_uid, "open")])
    # keys are kept in the index as digests, never the identifiers themselves
    rows = sqlite3.connect(tmp_path / "index.sqlite3").execute("SELECT * FROM study_keys").fetchall()
    assert rows and not any("P1" in str(v) or "ACC1" in str(v) for row in rows for v in row)


def test_one_patients_studies_close_in_time_are_one_exam_only_when_the_site_asks(tmp_path):
    staging, index = tmp_path / "staging", StagingIndex(tmp_path / "index.sqlite3")
    now = time.time()
    arterial = _exam("P1", "ACC1", "Arterial", at=T0)
    venous = _exam("P1", "ACC2", "Portal venous", at=T0 + 600)  # its own accession, 10 min later
    later_day = _exam("P1", "ACC3", "Portal venous", at=T0 + 6 * 3600)  # outside a 30 min window
    for e in (arterial, venous, later_day):
        _stage(index, staging, e, now)
    exams, _ = selection_report(staging, arterial.study_uid, index=index)
    assert [e.study_uids for e in exams] == [[arterial.study_uid]]
    exams, report = selection_report(staging, arterial.study_uid, index=index, window_seconds=1800)
    (exam,) = exams
    assert sorted(exam.study_uids) == sorted([arterial.study_uid, venous.study_uid])
    assert sorted(exam.pending_studies) == [venous.study_uid]  # its round is still open
    assert report["pending_studies"] == [venous.study_uid]
