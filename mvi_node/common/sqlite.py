"""SQLite as the node's stores use it: WAL, autocommit, one connection per thread.

The staging index and the job store are each one database file shared by threads and
processes. WAL lets readers run beside the one writer; a 60 s busy wait rides out a
writer in another process; explicit ``BEGIN IMMEDIATE`` transactions take the write
lock up front so a read-then-write never fails half way. Only ``synchronous`` differs
between the stores (the index can be repaired from the files, jobs cannot).

Writers queue on a lock of their own before ``BEGIN IMMEDIATE`` (:class:`WriterLock`: a
thread lock, then ``flock`` on ``<database>-writer.lock`` for the other processes, such as
listener processes sharing the port). SQLite's busy handler otherwise sleeps 1, 2, 5,
10 ... ms between retries, and with four associations indexing instances at once those
sleeps were a large part of an instance's index time (bench/RESULTS.md, #15). A writer
blocks on the lock as long as another holds it (a process that dies lets go of it);
SQLite's own 60 s busy wait stays for connections that do not take it.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


class WriterLock:
    """Writers of one database take turns: the threads of this process on a thread lock,
    the processes on ``flock`` of a lock file beside the database (one open file per
    process; after a fork the child opens its own, since a shared one would not exclude)."""

    def __init__(self, database: Path) -> None:
        self.path = Path(f"{database}-writer.lock")
        self._thread = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
            self._pid = os.getpid()
        return self._fd

    def __enter__(self) -> "WriterLock":
        self._thread.acquire()
        try:
            fcntl.flock(self._file(), fcntl.LOCK_EX)
        except BaseException:
            self._thread.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            fcntl.flock(self._file(), fcntl.LOCK_UN)
        finally:
            self._thread.release()


_writer_locks: dict[str, WriterLock] = {}
_writer_locks_guard = threading.Lock()


def writer_lock(path: Path) -> WriterLock:
    """The lock writers of the database at ``path`` take in turn (one per database and process)."""
    key = str(Path(path).resolve())
    with _writer_locks_guard:
        if key not in _writer_locks:
            _writer_locks[key] = WriterLock(Path(key))
        return _writer_locks[key]


def connect(
    path: Path, synchronous: Synchronous = "NORMAL", row_factory: Callable[..., Any] | None = None
) -> sqlite3.Connection:
    """Open ``path`` in WAL mode, autocommit (transactions are explicit), usable from any thread."""
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    if row_factory is not None:
        conn.row_factory = row_factory
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=60000")
    return conn


class SqliteDatabase:
    """Base for a store in one SQLite file: a connection per thread, ``_tx()`` for writes."""

    def __init__(
        self,
        path: Path,
        schema: str = "",
        synchronous: Synchronous = "NORMAL",
        row_factory: Callable[..., Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._synchronous: Synchronous = synchronous
        self._row_factory = row_factory
        self._local = threading.local()
        self._writer = writer_lock(self.path)
        if schema:
            self._conn().executescript(schema)

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, self._synchronous, self._row_factory)
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: ``BEGIN IMMEDIATE``, committed unless the block raises."""
        db = self._conn()
        with self._writer:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection (others close with their threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
