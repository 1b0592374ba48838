"""Which version of each result was sent, so a changed result supersedes the old one.

One row per (study, recipe, model): the version last sent, its content digest, its SR
UID and files. A re-run that says the same thing finds the same digest and sends
nothing new; one that says something else becomes the next version, whose SR names its
predecessor and which travels with a rejection note for the old instances.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from mvi_node.common.sqlite import SqliteDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    lineage TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    sr_uid TEXT NOT NULL,
    files TEXT NOT NULL,
    superseded TEXT NOT NULL DEFAULT '[]',
    updated_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class SentResult:
    version: int
    digest: str
    sr_uid: str
    files: tuple[Path, ...]
    #: SR UIDs of the versions this one replaced, oldest first
    superseded: tuple[str, ...] = ()


class ResultLineage(SqliteDatabase):
    def __init__(self, path: Path | str) -> None:
        super().__init__(path, SCHEMA, synchronous="FULL")

    @staticmethod
    def key(study_uid: str, recipe: str, model_key: str) -> str:
        return f"{study_uid}|{recipe}|{model_key}"

    def current(self, lineage: str) -> SentResult | None:
        row = self._conn().execute("SELECT version, digest, sr_uid, files, superseded FROM results WHERE lineage = ?",
                                   (lineage,)).fetchone()
        if row is None:
            return None
        return SentResult(int(row[0]), str(row[1]), str(row[2]), tuple(Path(f) for f in json.loads(row[3])),
                          tuple(json.loads(row[4])))

    def record(self, lineage: str, result: SentResult) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO results (lineage, version, digest, sr_uid, files, superseded, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(lineage) DO UPDATE SET version = excluded.version,"
                " digest = excluded.digest, sr_uid = excluded.sr_uid, files = excluded.files,"
                " superseded = excluded.superseded, updated_at = excluded.updated_at",
                (lineage, result.version, result.digest, result.sr_uid, json.dumps([str(f) for f in result.files]),
                 json.dumps(list(result.superseded)), time.time()))
