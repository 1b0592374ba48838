"""Dispatch to a real DCMTK storescp: retries with back-off, exactly-once, dead letters."""

from __future__ import annotations

import time

import pytest

from conftest import StoreSCP, free_port, run_cli_json  # noqa: F401 - StoreSCP: others import it from here
from mvi_node.config import load_settings
from mvi_node.config.destination import Destination
from mvi_node.dispatch.jobs import enqueue_dispatch
from mvi_node.jobs import JobState
from mvi_node.app.node import Node
from mvi_node.synth.plain_series import plain_ct_series


@pytest.fixture
def dispatch_node(tmp_path):
    nodes = []

    def make(destinations: list[str], max_attempts: int = 5) -> Node:
        s = load_settings(
            None,
            {
                "data_dir": str(tmp_path / f"var{len(nodes)}"),
                "listener.port": free_port(),
                "admin.enabled": False,
                "dispatch.destinations": destinations,
                "dispatch.backoff_initial_s": 0.3,
                "dispatch.backoff_max_s": 1.0,
                "dispatch.max_attempts": max_attempts,
            },
        )
        node = Node(s)
        for w in node.workers:
            w.poll_seconds = 0.1
        node.start()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()


def _wait_state(node: Node, job_id: int, states: set[JobState], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while node.jobs.get(job_id).state not in states and time.monotonic() < deadline:
        time.sleep(0.1)
    assert node.jobs.get(job_id).state in states, node.jobs.get(job_id)


def test_destination_down_then_up_delivers_exactly_once(dispatch_node, tmp_path):
    port = free_port()
    node = dispatch_node([f"PACS@127.0.0.1:{port}"])
    files = plain_ct_series(tmp_path / "results", slices=3, matrix=32, seed=61)
    (job,) = enqueue_dispatch(node.jobs, files, node.destinations, "r1", "1.2.3", max_attempts=5)
    deadline = time.monotonic() + 10
    while node.jobs.get(job.id).attempts < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    first = node.jobs.get(job.id)
    assert first.state is JobState.QUEUED and "no association" in first.last_error
    scp = StoreSCP(port, tmp_path / "pacs").start()
    try:
        _wait_state(node, job.id, {JobState.DONE})
        done = node.jobs.get(job.id)
        assert done.attempts >= 2 and len(done.result["sent"]) == 3
        # queued again under the same key (a replay): not sent twice
        again = enqueue_dispatch(node.jobs, files, node.destinations, "r1", "1.2.3", max_attempts=5)
        assert again[0].id == job.id
        time.sleep(1.0)
        assert len(scp.received()) == 3
    finally:
        scp.stop()


def test_dead_destination_is_dead_lettered_and_nothing_else_stalls(dispatch_node, tmp_path):
    live_port, dead_port = free_port(), free_port()
    node = dispatch_node([f"DEAD@127.0.0.1:{dead_port}", f"PACS@127.0.0.1:{live_port}"], max_attempts=3)
    scp = StoreSCP(live_port, tmp_path / "pacs").start()
    try:
        files = plain_ct_series(tmp_path / "results", slices=2, matrix=32, seed=62)
        dead_job, live_job = enqueue_dispatch(node.jobs, files, node.destinations, "r2", "1.2.3", max_attempts=3)
        _wait_state(node, live_job.id, {JobState.DONE}, timeout=15)
        assert len(scp.received()) == 2
        _wait_state(node, dead_job.id, {JobState.DEAD}, timeout=30)
        dead = node.jobs.get(dead_job.id)
        assert dead.attempts == 3 and f"DEAD@127.0.0.1:{dead_port}: no association" in dead.last_error
        # an operator requeues it once the destination is back
        node.stop()
        out = run_cli_json(["dispatch", "retry", str(dead_job.id), "--data-dir", str(node.settings.data_dir)])
        assert "queued again" in out
        assert node.jobs.get(dead_job.id).state is JobState.QUEUED
    finally:
        scp.stop()


def test_destination_spec_parsing():
    d = Destination.parse("PACS_1@pacs.example.org:104")
    assert (d.ae_title, d.host, d.port) == ("PACS_1", "pacs.example.org", 104)
    assert str(Destination.parse("X@[::1]:11112")) == "X@::1:11112"
    for bad in ("PACS", "PACS@host", "@host:104", "WAY_TOO_LONG_AE_TITLE@h:1", "A@h:0", "A@h:70000"):
        with pytest.raises(ValueError):
            Destination.parse(bad)


def test_a_silent_destination_delays_a_live_one_by_the_timeout_at_most(tmp_path):
    """A peer that accepts TCP and never answers (a loopback socket) holds the one
    dispatch worker for ``timeout_s``, then the live destination gets its results."""
    import socket
    import time as _time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections in the kernel, never reads or answers
    live_port = free_port()
    s = load_settings(None, {"data_dir": str(tmp_path / "var"), "listener.port": free_port(), "admin.enabled": False,
                             "dispatch.destinations": [f"SILENT@127.0.0.1:{silent.getsockname()[1]}",
                                                       f"PACS@127.0.0.1:{live_port}"],
                             "dispatch.timeout_s": 2.0, "dispatch.backoff_initial_s": 60.0, "dispatch.max_attempts": 2})
    node = Node(s)
    for w in node.workers:
        w.poll_seconds = 0.1
    scp = StoreSCP(live_port, tmp_path / "pacs").start()
    try:
        started = _time.monotonic()
        assert node.readiness[f"destination:SILENT@127.0.0.1:{silent.getsockname()[1]}"]()[0] is False
        assert _time.monotonic() - started < 2.0 + 1.5  # readiness does not hang either
        node.start()
        files = plain_ct_series(tmp_path / "results", slices=2, matrix=32, seed=63)
        silent_job, live_job = enqueue_dispatch(node.jobs, files, node.destinations, "r3", "1.2.3", max_attempts=2)
        started = _time.monotonic()
        _wait_state(node, live_job.id, {JobState.DONE}, timeout=20)
        assert _time.monotonic() - started < 2.0 + 5.0  # the timeout, plus sending two files on a busy CPU
        assert len(scp.received()) == 2
        failed = node.jobs.get(silent_job.id)
        assert failed.state is JobState.QUEUED and "silent for 2 s" in failed.last_error
    finally:
        node.stop()
        scp.stop()
        silent.close()
