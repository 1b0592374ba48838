"""The SQLite job store: states, attempts, dead letters, recovery after a crash."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from mvi_node.jobs import JobState, open_job_store
from mvi_node.jobs.worker import JobWorker, PermanentJobError


@pytest.fixture
def store(tmp_path):
    s = open_job_store("sqlite", tmp_path / "jobs.sqlite3", max_attempts=2)
    yield s
    s.close()


def test_enqueue_is_idempotent_by_key(store):
    a = store.enqueue("study", "study:1.2.3:round:1", {"study_uid": "1.2.3"})
    b = store.enqueue("study", "study:1.2.3:round:1", {"study_uid": "other"})
    assert a.id == b.id and b.payload == {"study_uid": "1.2.3"}
    assert store.counts()["queued"] == 1


def test_claim_complete_and_counts(store):
    store.enqueue("study", "k1", {})
    job = store.claim(["study"], worker="w")
    assert job.state is JobState.RUNNING and job.attempts == 1
    assert store.claim(["study"]) is None
    store.complete(job.id, {"ok": True})
    done = store.get(job.id)
    assert done.state is JobState.DONE and done.result == {"ok": True}
    assert store.counts() == {"queued": 0, "running": 0, "done": 1, "failed": 0, "dead": 0}


def test_retry_with_backoff_then_dead_letter(store):
    job = store.enqueue("dispatch", "k2", {})
    store.claim()
    assert store.fail(job.id, "peer down", retry_in=3600) is JobState.QUEUED
    assert store.claim() is None  # backing off
    store._conn().execute("UPDATE jobs SET not_before = 0 WHERE id = ?", (job.id,))
    assert store.claim().attempts == 2
    assert store.fail(job.id, "peer still down") is JobState.DEAD
    dead = store.get(job.id)
    assert dead.state is JobState.DEAD and dead.last_error == "peer still down"
    again = store.requeue(job.id)
    assert again.state is JobState.QUEUED and again.attempts == 0


def test_running_jobs_resume_after_restart(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    first = open_job_store("sqlite", path)
    job = first.enqueue("study", "k3", {"n": 1})
    assert first.claim().id == job.id
    first.close()  # the process dies with the job running
    second = open_job_store("sqlite", path)
    assert second.recover() == 1
    resumed = second.claim()
    assert resumed.id == job.id and resumed.attempts == 2 and resumed.payload == {"n": 1}


def _claim_in_child(path, out):
    store = open_job_store("sqlite", path)
    job = store.claim()
    out.put(job.id if job else None)


def test_two_processes_never_claim_the_same_job(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = open_job_store("sqlite", path)
    for i in range(4):
        store.enqueue("study", f"k{i}", {})
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_claim_in_child, args=(path, out)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    ids = [out.get(timeout=5) for _ in procs]
    assert sorted(ids) == sorted({j.id for j in store.list()})


def test_worker_outcomes(store):
    calls = []

    def ok(job):
        calls.append(job.id)
        return {"value": 1}

    def transient(job):
        raise RuntimeError("flaky")

    def permanent(job):
        raise PermanentJobError("no such study")

    worker = JobWorker(store, {"ok": ok, "flaky": transient, "bad": permanent}, backoff_seconds=0)
    a = store.enqueue("ok", "a", {})
    b = store.enqueue("flaky", "b", {})
    c = store.enqueue("bad", "c", {})
    while worker.run_one() is not None:
        pass
    assert store.get(a.id).result["value"] == 1
    assert store.get(b.id).state is JobState.DEAD and store.get(b.id).attempts == 2
    assert store.get(c.id).state is JobState.FAILED and store.get(c.id).last_error == "no such study"


def _claim_and_die(path):
    """A worker process that dies (as by OOM or kill -9) while running its job."""
    import os

    store = open_job_store("sqlite", path)
    store.recover()  # what the node does at start
    if store.claim() is not None:
        os._exit(137)
    os._exit(0)


def test_a_job_that_kills_the_process_ends_dead_lettered_not_crash_looping(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = open_job_store("sqlite", path, max_attempts=3)
    job = store.enqueue("study", "poison", {"study_uid": "1.2.3"})
    store.close()
    ctx = mp.get_context("spawn")
    codes = []
    for _ in range(5):  # five restarts of a node that dies on the job
        proc = ctx.Process(target=_claim_and_die, args=(path,))
        proc.start()
        proc.join(60)
        codes.append(proc.exitcode)
    assert codes == [137, 137, 137, 0, 0]  # three attempts, then nothing left to die on
    after = open_job_store("sqlite", path)
    after.recover()
    dead = after.get(job.id)
    assert dead.state is JobState.DEAD and dead.attempts == 3
    assert "died while running it 3 time(s)" in dead.last_error
