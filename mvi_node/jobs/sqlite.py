"""SQLite (WAL) job store: durable on one machine, several processes may share it."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from mvi_node.common.sqlite import SqliteDatabase
from mvi_node.jobs.store import Job, JobState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    key TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    not_before REAL NOT NULL DEFAULT 0,
    worker TEXT,
    last_error TEXT,
    result TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, not_before);
"""


class UnknownJob(KeyError):
    pass


class SqliteJobStore(SqliteDatabase):
    def __init__(self, path: Path, default_max_attempts: int = 3) -> None:
        self.default_max_attempts = default_max_attempts
        # Jobs are few and their state matters: every commit is synced.
        super().__init__(path, _SCHEMA, synchronous="FULL", row_factory=sqlite3.Row)
        #: (kinds, callback) of the workers to wake when a job of their kind is queued
        self._wakers: list[tuple[frozenset[str], Callable[[], None]]] = []

    def on_enqueue(self, kinds: Iterable[str], callback: Callable[[], None]) -> None:
        self._wakers.append((frozenset(kinds), callback))

    def _queued(self, kind: str) -> None:
        # after the commit: the woken worker's claim must see the row
        for kinds, wake in self._wakers:
            if kind in kinds:
                wake()

    def enqueue(self, kind: str, key: str, payload: dict[str, Any], max_attempts: int | None = None,
                not_before: float = 0.0) -> Job:
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs(kind, key, state, max_attempts, payload, not_before, created_at, updated_at)"
                " VALUES (?, ?, 'queued', ?, ?, ?, ?, ?) ON CONFLICT(key) DO NOTHING",
                (kind, key, max_attempts or self.default_max_attempts, json.dumps(payload), not_before, now, now),
            )
            row = db.execute("SELECT * FROM jobs WHERE key = ?", (key,)).fetchone()
        job = _job(row)
        if job.state is JobState.QUEUED:
            self._queued(kind)
        return job

    def claim(self, kinds: list[str] | None = None, worker: str = "") -> Job | None:
        now = time.time()
        sql = "SELECT id FROM jobs WHERE state = 'queued' AND not_before <= ?"
        args: list[Any] = [now]
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += kinds
        sql += " ORDER BY not_before, id LIMIT 1"
        with self._tx() as db:
            row = db.execute(sql, args).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, worker = ?, updated_at = ? WHERE id = ?",
                (worker, now, row["id"]),
            )
            return _job(db.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone())

    def complete(self, job_id: int, result: dict[str, Any] | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state = 'done', result = ?, last_error = NULL, updated_at = ? WHERE id = ?",
                (json.dumps(result or {}), time.time(), job_id),
            )

    def fail(self, job_id: int, error: str, retry_in: float | None = None, permanent: bool = False) -> JobState:
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT attempts, max_attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise UnknownJob(job_id)
            if permanent:
                state = JobState.FAILED
            elif row["attempts"] >= row["max_attempts"]:
                state = JobState.DEAD
            else:
                state = JobState.QUEUED
            db.execute(
                "UPDATE jobs SET state = ?, last_error = ?, not_before = ?, updated_at = ? WHERE id = ?",
                (state.value, error, now + (retry_in or 0.0), now, job_id),
            )
        return state

    def requeue(self, job_id: int) -> Job:
        """Operator retry: back to ``queued`` with a fresh attempt budget."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET state = 'queued', attempts = 0, not_before = 0, updated_at = ?"
                " WHERE id = ? AND state != 'running'",
                (now, job_id),
            )
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise UnknownJob(job_id)
        if cur.rowcount == 0:
            raise ValueError(f"job {job_id} is running")
        self._queued(row["kind"])
        return _job(row)

    def recover(self) -> int:
        """After a restart: jobs left ``running`` by the dead process run again, unless
        that was their last attempt. A claim counts as an attempt, so a job that kills the
        process (OOM, segfault, kill -9) ends dead-lettered instead of crash-looping."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state = 'dead', updated_at = ?, last_error = 'the node died while running it '"
                " || attempts || ' time(s) (crash loop?); not retried' WHERE state = 'running'"
                " AND attempts >= max_attempts", (now,))
            cur = db.execute(
                "UPDATE jobs SET state = 'queued', not_before = 0, updated_at = ? WHERE state = 'running'", (now,))
            return cur.rowcount

    def get(self, job_id: int) -> Job | None:
        row = self._conn().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def by_key(self, key: str) -> Job | None:
        row = self._conn().execute("SELECT * FROM jobs WHERE key = ?", (key,)).fetchone()
        return _job(row) if row else None

    def list(self, state: JobState | None = None, limit: int = 100, before_id: int | None = None) -> list[Job]:
        sql, args = "SELECT * FROM jobs WHERE id < ?", [before_id if before_id is not None else 2**62]
        if state is not None:
            sql += " AND state = ?"
            args.append(JobState(state).value)
        rows = self._conn().execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [_job(r) for r in rows]

    def forget_finished(self, updated_before: float) -> int:
        with self._tx() as db:
            return db.execute("DELETE FROM jobs WHERE state IN ('done', 'failed', 'dead') AND updated_at < ?",
                              (updated_before,)).rowcount

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in JobState}
        for state, n in self._conn().execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            out[state] = n
        return out

    def oldest_created_at(self, state: JobState) -> float | None:
        row = self._conn().execute(
            "SELECT MIN(created_at) FROM jobs WHERE state = ?", (JobState(state).value,)
        ).fetchone()
        return row[0]


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        kind=row["kind"],
        key=row["key"],
        state=JobState(row["state"]),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        payload=json.loads(row["payload"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        not_before=row["not_before"],
        last_error=row["last_error"],
        result=json.loads(row["result"]),
    )
