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
