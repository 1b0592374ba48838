"""Ground-floor helpers: the polling thread's error policy and the SQLite set-up."""

from __future__ import annotations

import logging
import threading

from mvi_node.common.poller import Poller
from mvi_node.common.sqlite import SqliteDatabase


class _Flaky(Poller):
    thread_name = "test-poller"
    failure_message = "test pass failed"

    def __init__(self) -> None:
        super().__init__(poll_seconds=0.01)
        self.passes = 0
        self.threads: set[str] = set()
        self.done = threading.Event()

    def poll(self) -> bool:
        self.passes += 1
        self.threads.add(threading.current_thread().name)
        if self.passes == 2:
            raise RuntimeError("transient")
        if self.passes >= 4:
            self.done.set()
        return False


def test_a_failed_pass_is_logged_and_the_loop_goes_on(caplog):
    poller = _Flaky()
    with caplog.at_level(logging.ERROR, logger="mvi_node"):
        poller.start()
        assert poller.done.wait(5)
        poller.stop()
    assert poller.threads == {"test-poller"}
    assert not poller._thread.is_alive()
    failures = [r for r in caplog.records if r.getMessage() == "test pass failed"]
    assert len(failures) == 1 and failures[0].exc_info[0] is RuntimeError


def test_first_pass_runs_in_the_caller_before_the_thread():
    class AtStart(_Flaky):
        def first_pass(self) -> bool:
            self.at_start = threading.current_thread().name
            return True

    poller = AtStart()
    poller.start()
    assert poller.at_start == threading.current_thread().name
    assert poller.done.wait(5)
    poller.stop()


def test_sqlite_database_is_wal_with_one_connection_per_thread(tmp_path):
    db = SqliteDatabase(tmp_path / "sub" / "x.sqlite3", "CREATE TABLE t (v INTEGER);", synchronous="FULL")
    with db._tx() as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    assert db._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db._conn().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    other: list = []
    t = threading.Thread(target=lambda: other.append((db._conn(), db._conn().execute("SELECT v FROM t").fetchall())))
    t.start()
    t.join()
    assert other[0][0] is not db._conn() and other[0][1] == [(1,)]
    try:
        with db._tx() as conn:
            conn.execute("INSERT INTO t VALUES (2)")
            raise ValueError("roll back")
    except ValueError:
        pass
    assert db._conn().execute("SELECT COUNT(*) FROM t").fetchone()[0] == 1
    db.close()
