"""Retention: old finished studies, results and jobs go; a study with a pending job never does."""

from __future__ import annotations

import time

from conftest import free_port, storescu
from mvi_node.app.node import Node
from mvi_node.config import load_settings
from mvi_node.jobs import JobState
from mvi_node.synth.plain_series import plain_ct_series

DAY = 86400.0


def _node(tmp_path) -> Node:
    s = load_settings(None, {"data_dir": str(tmp_path / "var"), "listener.port": free_port(), "admin.enabled": False,
                             "completion.quiet_seconds": 0.5, "retention.staging_days": 14,
                             "retention.results_days": 90, "retention.jobs_days": 365})
    node = Node(s)
    for w in node.workers:
        w.poll_seconds = 0.1
    return node


def _wait_done(node: Node, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = node.jobs.counts()
        if c["done"] >= n and c["queued"] == 0 and c["running"] == 0:
            return
        time.sleep(0.2)
    raise TimeoutError(node.jobs.counts())


def test_purge_removes_old_finished_studies_and_never_an_unfinished_one(tmp_path):
    node = _node(tmp_path)
    node.start()
    try:
        a = plain_ct_series(tmp_path / "a", slices=3, matrix=32, seed=1)
        b = plain_ct_series(tmp_path / "b", slices=3, matrix=32, seed=2)
        for files in (a, b):
            assert storescu(node.port, files[0].parent).returncode == 0
        _wait_done(node, 2)
        studies = sorted(p.name for p in node.settings.staging_dir.iterdir() if p.is_dir())
        assert len(studies) == 2
        study_a, study_b = studies
        # study B still has work the node has not done (a job nobody has run yet)
        node.jobs.enqueue("held", "held:b", {"study_uid": study_b})
        (node.settings.results_dir / study_a).mkdir(parents=True, exist_ok=True)
        (node.settings.results_dir / study_a / "r.dcm").write_bytes(b"result")
        soon = node.retention.run_once(now=time.time() + 15 * DAY)
        assert soon["studies"] == 1 and soon["instances"] == 3 and soon["results"] == 0 and soon["jobs"] == 0
        assert not (node.settings.staging_dir / study_a).exists() and (node.settings.staging_dir / study_b).is_dir()
        assert node.index.series_of(study_a) == {} and node.index.series_of(study_b)
        assert not (node.settings.data_dir / "purging").exists() or not any((node.settings.data_dir / "purging").iterdir())
        later = node.retention.run_once(now=time.time() + 400 * DAY)
        assert later["results"] == 1 and later["jobs"] == 2  # the two done study jobs
        assert (node.settings.staging_dir / study_b).is_dir()  # its held job is still queued
        assert node.jobs.counts()["queued"] == 1 and node.jobs.list(JobState.QUEUED)[0].kind == "held"
    finally:
        node.stop()
    # a restart does not bring the purged study back (nothing left to re-index)
    again = _node(tmp_path)
    again.start()
    try:
        assert again.index.series_of(study_a) == {} and again.index.counts()["studies"] == 1
    finally:
        again.stop()
