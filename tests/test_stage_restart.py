"""Start-up after a crash: open rounds get a fresh quiet period, so a sender's resend
lands in the round the crash interrupted instead of a second one."""

from __future__ import annotations

import time

from mvi_node.stage.index import InstanceRecord, StagingIndex
from mvi_node.stage.reconcile import reconcile


def _rec(sop: str, study: str) -> InstanceRecord:
    return InstanceRecord(sop, study, study + ".1", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1", 100)


def test_start_up_restarts_the_quiet_period_of_open_rounds_only(tmp_path):
    index = StagingIndex(tmp_path / "index.sqlite3")
    long_ago = time.time() - 3600
    index.add(_rec("1.2.3.1", "1.2.3"), now=long_ago)  # the round the crash interrupted
    index.add(_rec("1.2.4.1", "1.2.4"), now=long_ago)
    (done,) = [d for d in index.due_studies(2.0) if d.study_uid == "1.2.4"]
    assert index.mark_complete(done)  # a closed round stays closed
    assert [d.study_uid for d in index.due_studies(2.0)] == ["1.2.3"]  # due at once without the fix

    (tmp_path / "staging").mkdir()
    started = time.time()
    report = reconcile(tmp_path / "staging", index, tmp_path / "quarantine", tmp_path / "incoming")
    assert report.reopened == 1
    assert index.due_studies(2.0, now=started + 1.0) == []  # quiet counts from start-up
    assert [d.study_uid for d in index.due_studies(2.0, now=started + 3.0)] == ["1.2.3"]
    assert index.study_round("1.2.4")[1] == "complete"


def _staged_file(staging, study: str, sop: str) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, study + ".1", "CT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, sop
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    path = staging / study / (study + ".1") / f"{sop}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def test_start_up_walks_only_what_the_index_does_not_vouch_for(tmp_path):
    """Reconcile is bounded by the index: 200 quiet, indexed studies are not opened;
    an unknown study folder and the studies received just before the crash are."""
    staging, index = tmp_path / "staging", StagingIndex(tmp_path / "index.sqlite3")
    last_week = time.time() - 7 * 86400
    for i in range(200):
        study = f"1.2.5.{i}"
        _staged_file(staging, study, study + ".1.1")
        index.add(_rec(study + ".1.1", study), now=last_week)
    for done in index.due_studies(2.0):
        assert index.mark_complete(done)
    # a garbage file in an old, indexed study: never read, so never quarantined
    (staging / "1.2.5.7" / "1.2.5.7.1" / "9.9.9.dcm").write_bytes(b"garbage")
    # the study being received at the crash: one file renamed in, its row never committed
    crash = time.time() - 60
    _staged_file(staging, "1.2.6", "1.2.6.1.1")
    index.add(_rec("1.2.6.1.1", "1.2.6"), now=crash)
    _staged_file(staging, "1.2.6", "1.2.6.1.2")
    # a study whose first row never made it: a folder the index does not know
    _staged_file(staging, "1.2.7", "1.2.7.1.1")

    report = reconcile(staging, index, tmp_path / "quarantine", tmp_path / "incoming")
    assert report.studies_scanned == 2
    assert report.reindexed == 2 and index.contains("1.2.6.1.2") and index.contains("1.2.7.1.1")
    assert report.unreadable == 0 and not (tmp_path / "quarantine").exists()
