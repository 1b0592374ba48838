"""Orthanc housekeeping that must hold for years: every job swept, the disk floor honoured."""

from __future__ import annotations

import pytest

from conftest import free_port
from mvi_node.jobs import open_job_store
from mvi_node.orthanc.client import OrthancClient
from mvi_node.orthanc.intake import StagingFull, import_study
from mvi_node.orthanc.results import ORTHANC_STORE_JOB, RetentionSweeper
from mvi_node.receive.policy import DiskGuard


def test_retention_sweeper_sees_every_done_store_job_not_only_the_newest_1000(tmp_path):
    jobs = open_job_store("sqlite", tmp_path / "jobs.sqlite3")
    for i in range(1234):
        jobs.enqueue(ORTHANC_STORE_JOB, f"orthanc-store:{i}", {"files": []})
    while (job := jobs.claim([ORTHANC_STORE_JOB])) is not None:
        jobs.complete(job.id, {"orthanc_studies": []})
    sweeper = RetentionSweeper(OrthancClient(f"http://127.0.0.1:{free_port()}"), jobs, 0.0)
    seen = [j.id for j in sweeper._done_store_jobs()]
    assert len(seen) == len(set(seen)) == 1234
    assert sweeper.sweep() == 0  # nothing to delete, and no job skipped: all remembered as swept
    assert len(sweeper._swept) == 1234


def test_orthanc_import_below_the_disk_floor_is_transient_and_takes_nothing(tmp_path):
    # a client to a port nobody listens on: below the floor it must not even be asked
    client = OrthancClient(f"http://127.0.0.1:{free_port()}")
    floor = DiskGuard(tmp_path, 1 << 62)  # more than any disk has free
    with pytest.raises(StagingFull, match="below the node's floor"):
        import_study(client, "study-1", stager=None, disk=floor)  # type: ignore[arg-type]
