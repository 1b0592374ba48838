"""SQLite index of staged instances and of each study's receive rounds.

The files under ``staging/`` are the durable record; this index is how the node finds
them quickly and knows when a study went quiet. It runs in WAL mode with
``synchronous=NORMAL``: a killed process loses no committed row, and an operating-system
crash that loses the last rows is repaired by :meth:`StagingIndex.reconcile`, which
re-indexes any staged file the index does not know.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from mvi_node.common.sqlite import SqliteDatabase

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    transfer_syntax TEXT NOT NULL,
    size INTEGER NOT NULL,
    calling_ae TEXT,
    received_at REAL NOT NULL,
    round INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_uid, series_uid);
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    round INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'complete')),
    first_received REAL NOT NULL,
    last_received REAL NOT NULL,
    round_instances INTEGER NOT NULL,
    completed_at REAL,
    -- 0 between closing a round and its job being enqueued: a crash there is
    -- repaired by the next completion pass (enqueue is idempotent by key).
    job_enqueued INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS studies_open ON studies(state, last_received);
CREATE INDEX IF NOT EXISTS studies_received ON studies(last_received);
-- What relates a study to the other studies of its exam (select/job.py), read from one
-- header when first needed: patient and accession as digests (the index needs to compare
-- them, not to show them), the frame of reference as is.
CREATE TABLE IF NOT EXISTS study_keys (
    study_uid TEXT PRIMARY KEY,
    patient TEXT NOT NULL,
    accession TEXT NOT NULL,
    frame_of_reference TEXT NOT NULL,
    study_time REAL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class InstanceRecord:
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    sop_class_uid: str
    transfer_syntax: str
    size: int
    calling_ae: str | None = None


@dataclass(frozen=True)
class StudyKeys:
    """How a study is matched to the other parts of its exam (digests, not identifiers)."""

    patient: str
    accession: str
    frame_of_reference: str
    #: StudyDate + StudyTime as epoch seconds (site-local time read as UTC), None if absent
    study_time: float | None = None


@dataclass(frozen=True)
class NearbyStudy:
    """A staged study received within a window of another (a candidate part of its exam)."""

    study_uid: str
    state: str
    last_received: float
    keys: StudyKeys | None


@dataclass(frozen=True)
class DueStudy:
    study_uid: str
    round: int
    instances: int
    first_received: float
    last_received: float


class StagingIndex(SqliteDatabase):
    """Thread-safe access to the index; one SQLite connection per thread."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, _SCHEMA, synchronous="NORMAL")

    # -- receive side -------------------------------------------------------------

    def contains(self, sop_instance_uid: str) -> bool:
        row = self._conn().execute(
            "SELECT 1 FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)
        ).fetchone()
        return row is not None

    def add(self, rec: InstanceRecord, now: float | None = None) -> bool:
        """Index a staged instance; ``False`` (and a duplicate counted) if already known.

        A new instance of a study whose round is complete opens the next round.
        """
        now = time.time() if now is None else now
        with self._tx() as db:
            study = db.execute(
                "SELECT round, state FROM studies WHERE study_uid = ?", (rec.study_uid,)
            ).fetchone()
            known = db.execute(
                "SELECT 1 FROM instances WHERE sop_instance_uid = ?", (rec.sop_instance_uid,)
            ).fetchone()
            if known:
                _bump(db, "duplicates")
                # A resend keeps an open study open: the sender is still busy with it.
                db.execute(
                    "UPDATE studies SET last_received = ? WHERE study_uid = ? AND state = 'open'",
                    (now, rec.study_uid),
                )
                return False
            if study is None:
                round_no = 1
                db.execute(
                    "INSERT INTO studies(study_uid, round, state, first_received, last_received, round_instances)"
                    " VALUES (?, 1, 'open', ?, ?, 1)",
                    (rec.study_uid, now, now),
                )
            elif study[1] == "complete":
                round_no = study[0] + 1
                db.execute(
                    "UPDATE studies SET round = ?, state = 'open', first_received = ?, last_received = ?,"
                    " round_instances = 1, completed_at = NULL WHERE study_uid = ?",
                    (round_no, now, now, rec.study_uid),
                )
            else:
                round_no = study[0]
                db.execute(
                    "UPDATE studies SET last_received = ?, round_instances = round_instances + 1"
                    " WHERE study_uid = ?",
                    (now, rec.study_uid),
                )
            db.execute(
                "INSERT INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.sop_instance_uid,
                    rec.study_uid,
                    rec.series_uid,
                    rec.sop_class_uid,
                    rec.transfer_syntax,
                    rec.size,
                    rec.calling_ae,
                    now,
                    round_no,
                ),
            )
            return True

    def bump(self, name: str, by: int = 1) -> None:
        """Count an event (a rejection, say) so every listener process shares one tally."""
        with self._tx() as db:
            _bump(db, name, by)

    def counters(self) -> dict[str, int]:
        return dict(self._conn().execute("SELECT name, value FROM counters").fetchall())

    # -- completion side ----------------------------------------------------------

    def due_studies(self, quiet_seconds: float, now: float | None = None) -> list[DueStudy]:
        cutoff = (time.time() if now is None else now) - quiet_seconds
        rows = self._conn().execute(
            "SELECT study_uid, round, round_instances, first_received, last_received FROM studies"
            " WHERE state = 'open' AND last_received <= ? ORDER BY last_received",
            (cutoff,),
        ).fetchall()
        return [DueStudy(*row) for row in rows]

    def restart_quiet(self, now: float | None = None) -> int:
        """Give every open round a fresh quiet period from ``now`` (start-up): the node heard
        nothing while it was down, and a sender whose association the crash cut resends,
        so its instances must land in the same round, not open a second one. Returns the
        number of open rounds."""
        now = time.time() if now is None else now
        with self._tx() as db:
            return db.execute("UPDATE studies SET last_received = ? WHERE state = 'open' AND last_received < ?",
                              (now, now)).rowcount

    def mark_complete(self, due: DueStudy, now: float | None = None) -> bool:
        """Close ``due``'s round unless an instance arrived since it was found due."""
        now = time.time() if now is None else now
        with self._tx() as db:
            cur = db.execute(
                "UPDATE studies SET state = 'complete', completed_at = ?, job_enqueued = 0"
                " WHERE study_uid = ? AND round = ? AND state = 'open' AND last_received = ?",
                (now, due.study_uid, due.round, due.last_received),
            )
            return cur.rowcount == 1

    def awaiting_job(self) -> list[tuple[str, int, int]]:
        """Closed rounds whose job is not yet known to be enqueued: (study, round, instances)."""
        return self._conn().execute(
            "SELECT study_uid, round, round_instances FROM studies WHERE state = 'complete' AND job_enqueued = 0"
        ).fetchall()

    def mark_job_enqueued(self, study_uid: str, round_no: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE studies SET job_enqueued = 1 WHERE study_uid = ? AND round = ?", (study_uid, round_no)
            )

    # -- retention ----------------------------------------------------------------

    def finished_studies(self, received_before: float) -> list[tuple[str, float]]:
        """Complete studies whose last instance came before ``received_before``, oldest
        first: (study, last received)."""
        return self._conn().execute(
            "SELECT study_uid, last_received FROM studies WHERE state = 'complete' AND job_enqueued = 1"
            " AND last_received < ? ORDER BY last_received", (received_before,)).fetchall()

    def forget_study(self, study_uid: str) -> int:
        """Drop a purged study's rows; returns the instances forgotten."""
        with self._tx() as db:
            n = db.execute("DELETE FROM instances WHERE study_uid = ?", (study_uid,)).rowcount
            db.execute("DELETE FROM studies WHERE study_uid = ?", (study_uid,))
            db.execute("DELETE FROM study_keys WHERE study_uid = ?", (study_uid,))
            return n

    # -- readers ------------------------------------------------------------------

    def series_of(self, study_uid: str) -> dict[str, list[str]]:
        rows = self._conn().execute(
            "SELECT series_uid, sop_instance_uid FROM instances WHERE study_uid = ? ORDER BY series_uid",
            (study_uid,),
        ).fetchall()
        out: dict[str, list[str]] = {}
        for series_uid, sop_uid in rows:
            out.setdefault(series_uid, []).append(sop_uid)
        return out

    def instances_after(self, rowid: int, limit: int = 1000) -> list[tuple[int, str, str, str]]:
        """(row id, study, series, SOP instance) of the instances indexed after row
        ``rowid``, oldest first: what the header prefetch has not seen yet."""
        rows = self._conn().execute(
            "SELECT rowid, study_uid, series_uid, sop_instance_uid FROM instances WHERE rowid > ?"
            " ORDER BY rowid LIMIT ?", (rowid, limit)).fetchall()
        return [(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]

    def newest_rowid(self) -> int:
        row = self._conn().execute("SELECT COALESCE(MAX(rowid), 0) FROM instances").fetchone()
        return int(row[0])

    def study_round(self, study_uid: str) -> tuple[int, str, float, bool] | None:
        """(round, 'open' or 'complete', first instance of the round, job enqueued) of a study."""
        row = self._conn().execute(
            "SELECT round, state, first_received, job_enqueued FROM studies WHERE study_uid = ?", (study_uid,)
        ).fetchone()
        return (int(row[0]), str(row[1]), float(row[2]), bool(row[3])) if row else None

    def received_between(self, start: float, end: float) -> list[NearbyStudy]:
        """Studies whose latest instance came in ``[start, end]``, with their keys if known:
        the bounded candidate list for sibling lookup (never every study staged)."""
        rows = self._conn().execute(
            "SELECT s.study_uid, s.state, s.last_received, k.patient, k.accession, k.frame_of_reference,"
            " k.study_time FROM studies s LEFT JOIN study_keys k ON k.study_uid = s.study_uid"
            " WHERE s.last_received BETWEEN ? AND ? ORDER BY s.study_uid", (start, end)).fetchall()
        return [NearbyStudy(r[0], r[1], r[2], StudyKeys(r[3], r[4], r[5], r[6]) if r[3] is not None else None)
                for r in rows]

    def set_study_keys(self, study_uid: str, keys: StudyKeys) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO study_keys VALUES (?, ?, ?, ?, ?)",
                       (study_uid, keys.patient, keys.accession, keys.frame_of_reference, keys.study_time))

    def last_received(self, study_uid: str) -> float | None:
        row = self._conn().execute("SELECT last_received FROM studies WHERE study_uid = ?", (study_uid,)).fetchone()
        return float(row[0]) if row else None

    def one_instance(self, study_uid: str) -> tuple[str, str] | None:
        """(series, SOP instance) of one staged instance of a study, to read its header."""
        row = self._conn().execute(
            "SELECT series_uid, sop_instance_uid FROM instances WHERE study_uid = ? LIMIT 1", (study_uid,)).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def studies(self, received_since: float | None = None) -> list[tuple[str, str, float]]:
        """(study, state, last received) of every study, or of those received since a time."""
        sql = "SELECT study_uid, state, last_received FROM studies"
        args: tuple = ()
        if received_since is not None:
            sql, args = sql + " WHERE last_received >= ? OR state = 'open'", (received_since,)
        return [(str(a), str(b), float(c)) for a, b, c in self._conn().execute(sql, args).fetchall()]

    def newest_received(self) -> float | None:
        row = self._conn().execute("SELECT MAX(received_at) FROM instances").fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def series_bytes(self, study_uid: str, series_uid: str) -> int:
        """Bytes staged of one series (what a replay's MB/s budget counts)."""
        row = self._conn().execute(
            "SELECT COALESCE(SUM(size), 0) FROM instances WHERE study_uid = ? AND series_uid = ?", (study_uid, series_uid)
        ).fetchone()
        return int(row[0])

    def completed_rounds(self) -> int:
        """Rounds closed so far, over all studies."""
        row = self._conn().execute(
            "SELECT COALESCE(SUM(CASE WHEN state = 'complete' THEN round ELSE round - 1 END), 0) FROM studies"
        ).fetchone()
        return int(row[0])

    def counts(self) -> dict[str, int]:
        db = self._conn()
        studies = db.execute("SELECT COUNT(*) FROM studies").fetchone()[0]
        instances = db.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
        dup = db.execute("SELECT value FROM counters WHERE name = 'duplicates'").fetchone()
        return {"studies": studies, "instances": instances, "duplicates": dup[0] if dup else 0}


def _bump(db: sqlite3.Connection, name: str, by: int = 1) -> None:
    db.execute(
        "INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
        (name, by, by),
    )
