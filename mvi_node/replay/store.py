"""Durable replay state in SQLite: a killed node resumes each replay where it was.

``replays``: one row per request (state, the request, counts, the manifest of a dry run).
``studies``: one row per study found, with its plan (series to retrieve, expected
instance counts) and its state: planned -> retrieving -> retrieved -> processing -> done,
or skipped / failed with the reason. ``done``: which study was processed with which
models (``recipe@sha256`` list), so a later replay skips it unless forced.
Only UIDs, counts and reasons are stored besides the request itself.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mvi_node.common.sqlite import SqliteDatabase
from mvi_node.replay.request import ReplayRequest

SCHEMA = """
CREATE TABLE IF NOT EXISTS replays (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    state TEXT NOT NULL,
    request TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    cancel INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    notes TEXT NOT NULL DEFAULT '[]',
    -- why retrieval waits right now (busy hours, the disk floor); '' when it does not
    paused TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS studies (
    replay_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    study_uid TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    plan TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    retrieved INTEGER NOT NULL DEFAULT 0,
    failed_subops INTEGER NOT NULL DEFAULT 0,
    since REAL,
    job_key TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (replay_id, study_uid)
);
CREATE INDEX IF NOT EXISTS studies_state ON studies(replay_id, state, position);
CREATE TABLE IF NOT EXISTS done (
    study_uid TEXT NOT NULL,
    models TEXT NOT NULL,
    replay_id INTEGER NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (study_uid, models)
);
"""

#: replay states; the first three are active (the runner works on them)
QUEUED, QUERYING, RUNNING, DONE, FAILED, CANCELLED = "queued", "querying", "running", "done", "failed", "cancelled"
ACTIVE = (QUEUED, QUERYING, RUNNING)
#: study states
PLANNED, SKIPPED, RETRIEVING, RETRIEVED, PROCESSING, STUDY_DONE, STUDY_FAILED = (
    "planned", "skipped", "retrieving", "retrieved", "processing", "done", "failed")
TERMINAL = (SKIPPED, STUDY_DONE, STUDY_FAILED, CANCELLED)


@dataclass
class Replay:
    id: int
    state: str
    request: ReplayRequest
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    cancel: bool
    error: str | None
    notes: list[str] = field(default_factory=list)
    paused: str = ""


@dataclass
class StudyRow:
    replay_id: int
    position: int
    study_uid: str
    state: str
    reason: str
    plan: dict[str, Any]
    attempts: int
    retrieved: int
    failed_subops: int
    since: float | None
    job_key: str | None


class ReplayStore(SqliteDatabase):
    def __init__(self, path: Path | str) -> None:
        # replay state is what a restart resumes from: every commit synced
        super().__init__(Path(path), SCHEMA, synchronous="FULL")

    # -- replays ----------------------------------------------------------------------
    def create(self, request: ReplayRequest) -> Replay:
        now = time.time()
        with self._tx() as db:
            # json.dumps escapes what UTF-8 cannot hold (a lone surrogate a client sent)
            cur = db.execute("INSERT INTO replays(state, request, created_at, updated_at) VALUES (?, ?, ?, ?)",
                             (QUEUED, json.dumps(request.model_dump(exclude_none=True)), now, now))
            rid = int(cur.lastrowid)
        return self.get(rid)  # type: ignore[return-value]

    def get(self, replay_id: int) -> Replay | None:
        row = self._conn().execute(
            "SELECT id, state, request, created_at, updated_at, started_at, finished_at, cancel, error, notes,"
            " paused FROM replays WHERE id = ?", (replay_id,)).fetchone()
        return _replay(row) if row else None

    def list(self, limit: int = 50) -> list[Replay]:
        rows = self._conn().execute(
            "SELECT id, state, request, created_at, updated_at, started_at, finished_at, cancel, error, notes,"
            " paused FROM replays ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [_replay(r) for r in rows]

    def next_active(self) -> Replay | None:
        """The replay to work on: a queued dry run first (it only asks questions, and
        its caller waits for the answer), else the oldest active one (one at a time)."""
        row = self._conn().execute(
            "SELECT id FROM replays WHERE state IN (?, ?, ?) ORDER BY"
            " CASE WHEN state = 'queued' AND json_extract(request, '$.dry_run') THEN 0 ELSE 1 END, id LIMIT 1",
            ACTIVE).fetchone()
        return self.get(int(row[0])) if row else None

    def set_state(self, replay_id: int, state: str, error: str | None = None) -> None:
        now = time.time()
        with self._tx() as db:
            db.execute(
                "UPDATE replays SET state = ?, error = COALESCE(?, error), updated_at = ?,"
                " started_at = CASE WHEN ? = 'running' AND started_at IS NULL THEN ? ELSE started_at END,"
                " finished_at = CASE WHEN ? IN ('done', 'failed', 'cancelled') THEN ? ELSE finished_at END"
                " WHERE id = ?", (state, error, now, state, now, state, now, replay_id))

    def add_note(self, replay_id: int, note: str) -> None:
        with self._tx() as db:
            row = db.execute("SELECT notes FROM replays WHERE id = ?", (replay_id,)).fetchone()
            notes = json.loads(row[0]) if row else []
            if note not in notes:
                notes.append(note)
            db.execute("UPDATE replays SET notes = ? WHERE id = ?", (json.dumps(notes), replay_id))

    def set_paused(self, replay_id: int, reason: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE replays SET paused = ? WHERE id = ?", (reason, replay_id))

    def request_cancel(self, replay_id: int) -> bool:
        with self._tx() as db:
            n = db.execute("UPDATE replays SET cancel = 1, updated_at = ? WHERE id = ? AND state IN (?, ?, ?)",
                           (time.time(), replay_id, *ACTIVE)).rowcount
        return bool(n)

    # -- studies ----------------------------------------------------------------------
    def add_studies(self, replay_id: int, plans: list[dict[str, Any]]) -> None:
        """Planned (or skipped, with ``skip`` set) studies, in the order they will run;
        idempotent: a replay re-planned after a crash keeps the rows it had."""
        now = time.time()
        with self._tx() as db:
            for pos, plan in enumerate(plans):
                state = SKIPPED if plan.get("skip") else PLANNED
                db.execute(
                    "INSERT INTO studies(replay_id, position, study_uid, state, reason, plan, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(replay_id, study_uid) DO NOTHING",
                    (replay_id, pos, plan["study_uid"], state, plan.get("skip") or "", json.dumps(plan), now))

    def studies(self, replay_id: int, state: str | None = None) -> list[StudyRow]:
        sql = ("SELECT replay_id, position, study_uid, state, reason, plan, attempts, retrieved, failed_subops,"
               " since, job_key FROM studies WHERE replay_id = ?")
        args: list[Any] = [replay_id]
        if state is not None:
            sql += " AND state = ?"
            args.append(state)
        rows = self._conn().execute(sql + " ORDER BY position", args).fetchall()
        return [StudyRow(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], r[8], r[9], r[10])
                for r in rows]

    def update_study(self, replay_id: int, study_uid: str, **values: Any) -> None:
        allowed = {"state", "reason", "attempts", "retrieved", "failed_subops", "since", "job_key"}
        assert set(values) <= allowed, set(values) - allowed
        cols = ", ".join(f"{k} = ?" for k in values)
        with self._tx() as db:
            db.execute(f"UPDATE studies SET {cols}, updated_at = ? WHERE replay_id = ? AND study_uid = ?",
                       (*values.values(), time.time(), replay_id, study_uid))

    def is_retrieving(self, study_uid: str) -> bool:
        """Whether a replay is still fetching the study (its round must not close yet:
        a job on part of the study would be wasted, and its result superseded)."""
        row = self._conn().execute(
            "SELECT 1 FROM studies s JOIN replays r ON r.id = s.replay_id WHERE s.study_uid = ? AND s.state = ?"
            " AND r.state = ? AND r.cancel = 0 LIMIT 1", (study_uid, RETRIEVING, RUNNING)).fetchone()
        return row is not None

    def counts(self, replay_id: int) -> dict[str, int]:
        rows = self._conn().execute("SELECT state, COUNT(*) FROM studies WHERE replay_id = ? GROUP BY state",
                                    (replay_id,)).fetchall()
        return {str(s): int(n) for s, n in rows}

    def destination_for(self, study_uid: str) -> str | None:
        """The research destination of a running replay that is retrieving or
        processing ``study_uid`` (its results go there, not to the configured ones)."""
        rows = self._conn().execute(
            "SELECT r.request FROM studies s JOIN replays r ON r.id = s.replay_id WHERE s.study_uid = ?"
            " AND s.state IN (?, ?, ?) AND r.state = ? ORDER BY r.id DESC",
            (study_uid, RETRIEVING, RETRIEVED, PROCESSING, RUNNING)).fetchall()
        for (request,) in rows:
            dest = ReplayRequest.model_validate(json.loads(request)).destination
            if dest:
                return dest
        return None

    # -- what was processed -----------------------------------------------------------
    def mark_done(self, study_uid: str, models: str, replay_id: int) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO done(study_uid, models, replay_id, at) VALUES (?, ?, ?, ?)"
                       " ON CONFLICT(study_uid, models) DO UPDATE SET replay_id = excluded.replay_id, at = excluded.at",
                       (study_uid, models, replay_id, time.time()))

    def processed_with(self, study_uid: str) -> set[str]:
        rows = self._conn().execute("SELECT models FROM done WHERE study_uid = ?", (study_uid,)).fetchall()
        return {str(r[0]) for r in rows}


def _replay(row) -> Replay:
    return Replay(int(row[0]), str(row[1]), ReplayRequest.model_validate(json.loads(row[2])), float(row[3]), float(row[4]),
                  row[5], row[6], bool(row[7]), row[8], json.loads(row[9] or "[]"), str(row[10] or ""))
