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


def test_plugin_hand_offs_refused_for_a_wrong_token_are_logged_once_and_dropped(tmp_path, node):
    """A wrong MviNode.Token is not retried forever on the plugin's single thread: the first
    refusal is logged once, every hand-off is dropped, and the node's change-log catch-up
    imports the studies anyway."""
    import time

    import httpx

    from mvi_node.synth import make_exam
    from orthanc_fixtures import PYTHON_PLUGIN, REPO, OrthancProcess

    token = "a-real-token-of-32-characters-ok"
    staging = OrthancProcess(tmp_path / "staging", "STAGING")
    n = node(quiet=1.0, env={"MVI_ORTHANC__ENABLED": "true", "MVI_ORTHANC__URL": staging.url,
                             "MVI_ORTHANC__CHANGES_POLL_SECONDS": "2", "MVI_ADMIN__TOKEN": token,
                             "MVI_MODELS__PINS": '{"ct_ap_resnet18": "none", "mr_3seq_grade": "none", '
                                                 '"liver_tumor_seg": "none"}'})
    staging.config.update({"Plugins": [PYTHON_PLUGIN], "PythonScript": str(REPO / "plugins/mvi_node_orthanc.py"),
                           "MviNode": {"Url": f"http://127.0.0.1:{n.admin_port}", "Token": "not-the-token-at-all"}})
    staging.start()
    try:
        def imports() -> int:
            jobs = httpx.get(f"http://127.0.0.1:{n.admin_port}/jobs", timeout=10,
                             headers={"Authorization": f"Bearer {token}"}).json()
            return sum(j["kind"] == "orthanc-import" and j["state"] == "done" for j in jobs)

        for i in range(2):
            make_exam(tmp_path / f"exam{i}", "ct", seed=77, index=i, mvi=True, hard_cases="none", matrix=64,
                      annotations="seg")
            staging.upload_folder(tmp_path / f"exam{i}")
            deadline = time.monotonic() + 90
            while imports() < i + 1 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert imports() == i + 1, "the change-log catch-up did not import the study"
        time.sleep(3)  # a retry loop would have logged by now
        log = (tmp_path / "staging" / "orthanc.log").read_text(errors="replace")
    finally:
        staging.stop()
    refused = [line for line in log.splitlines() if "hand-offs refused with HTTP" in line]
    assert len(refused) == 1 and ("HTTP 401" in refused[0] or "HTTP 403" in refused[0]), refused
    assert "retrying" not in log
