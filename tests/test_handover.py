"""The hand-over between stages is not a polling interval (issue 17 item 3).

A study job is queued when its round completes and a dispatch job when its results are
written; in the node both are queued by the process that runs them, so the worker is
woken at once. Measured on a real node: exams sent by DCMTK storescu over loopback,
results stored at a real storescp; each job records how long it waited claimable.
The workers' polling interval is 0.5 s, so a polled hand-over waits 0.25 s on average
and four jobs all under 0.15 s happen by chance less than once in a hundred runs.
"""

from __future__ import annotations

import json
import time

from conftest import free_port, storescu
from mvi_node.jobs.sqlite import SqliteJobStore
from mvi_node.jobs.store import JobState
from mvi_node.jobs.worker import JobWorker
from mvi_node.synth import make_exam
from test_dispatch import StoreSCP

#: a woken worker starts well inside this; a polling one (every 0.5 s) mostly does not
PICKUP_S = 0.15


def test_study_and_dispatch_jobs_start_as_soon_as_they_are_queued(node, tmp_path):
    pacs = StoreSCP(free_port(), tmp_path / "pacs").start()
    try:
        n = node(quiet=1.0, env={"MVI_DISPATCH__DESTINATIONS": json.dumps([f"PACS@127.0.0.1:{pacs.port}"])})
        for i in range(2):
            exam = tmp_path / f"exam{i}"
            make_exam(exam, "ct", seed=4242, index=i, mvi=True, hard_cases="none", annotations="seg",
                      seg_on="arterial", matrix=128)
            assert storescu(n.port, exam, extra=["-R"]).returncode == 0
        n.wait_jobs(4, timeout=120)  # 2 study jobs, 2 dispatch jobs
    finally:
        pacs.stop()
    store = SqliteJobStore(n.data_dir / "jobs.sqlite3")
    jobs = store.list()
    store.close()
    assert sorted(j.kind for j in jobs) == ["dispatch", "dispatch", "study", "study"]
    assert all(j.state is JobState.DONE for j in jobs), [(j.kind, j.state, j.last_error) for j in jobs]
    # the hand-over gap: how long a job sat claimable while its worker was free (study 2 may
    # also queue behind study 1 on the one study worker; that wait is work, not hand-over)
    pickup = {f"{j.kind} {j.id}": j.result["pickup_seconds"] for j in jobs}
    assert all(w < PICKUP_S for w in pickup.values()), pickup
    assert all(j.result["waited_seconds"] >= j.result["pickup_seconds"] for j in jobs)


def test_a_job_queued_behind_a_busy_worker_waits_for_the_work_not_the_hand_over(tmp_path):
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    worker = JobWorker(store, {"k": lambda job: time.sleep(0.6 if job.payload["slow"] else 0) or {}},
                       poll_seconds=30.0)
    worker.start()
    try:
        store.enqueue("k", "slow", {"slow": True})
        time.sleep(0.1)  # the slow job is running
        store.enqueue("k", "quick", {"slow": False})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum(j.state is JobState.DONE for j in store.list()) < 2:
            time.sleep(0.01)
    finally:
        worker.stop()
    quick = next(j for j in store.list() if j.payload == {"slow": False})
    assert quick.state is JobState.DONE
    assert quick.result["waited_seconds"] >= 0.4  # queued behind 0.5 s of the slow job
    assert quick.result["pickup_seconds"] < PICKUP_S
    store.close()


def test_a_worker_woken_by_enqueue_does_not_wait_for_its_poll(tmp_path):
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    started: list[float] = []
    worker = JobWorker(store, {"k": lambda job: started.append(time.monotonic()) or {}}, poll_seconds=30.0)
    worker.start()
    try:
        time.sleep(0.2)  # the worker is in its 30 s wait
        queued = time.monotonic()
        store.enqueue("k", "one", {})
        deadline = time.monotonic() + 5
        while not started and time.monotonic() < deadline:
            time.sleep(0.005)
        assert started and started[0] - queued < 0.5
        # a job of another kind does not wake it
        store.enqueue("other", "two", {})
        assert store.by_key("two").state is JobState.QUEUED
    finally:
        worker.stop()
        store.close()


def test_warm_up_loads_every_served_graph_before_the_first_exam(tmp_path):
    from mvi_node.app.engine import build_engine, warm_up
    from mvi_node.config import Settings

    engine = build_engine(Settings(data_dir=tmp_path / "var"))
    graphs = {(m.folder, v) for m in map(engine.registry.get, engine.registry.models) if m is not None
              for v, info in m.variants.items() if info.kind == "onnx"}
    assert graphs, "no served ONNX graph to warm"
    warm_up(engine)
    loaded = dict(engine._sessions)
    assert {(folder, variant) for folder, variant, _precision in loaded} == graphs
    model = next(m for m in map(engine.registry.get, engine.registry.models) if m is not None)
    variant = next(v for v, info in model.variants.items() if info.kind == "onnx")
    assert engine.session(model, variant) is next(s for (f, v, _p), s in loaded.items()
                                                  if (f, v) == (model.folder, variant))  # kept, not remade
