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


def test_sqlite_writers_of_one_process_take_turns_without_the_busy_wait(tmp_path):
    """Threads of one process writing one database (through one or two store objects) queue
    on the process's writer lock: not one of them meets SQLite's busy handler, whose sleeps
    (1, 2, 5, 10 ... ms) held up the index of four associations at once. Shown with the busy
    wait switched off: a writer that found the database locked would fail at once."""
    import time

    path = tmp_path / "x.sqlite3"
    stores = [SqliteDatabase(path, "CREATE TABLE IF NOT EXISTS t (k INTEGER, v INTEGER);") for _ in range(2)]
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def writer(k: int) -> None:
        db = stores[k % 2]
        db._conn().execute("PRAGMA busy_timeout=0")
        start.wait()
        try:
            for v in range(60):
                with db._tx() as conn:
                    conn.execute("INSERT INTO t VALUES (?, ?)", (k, v))
                    time.sleep(0.0005)  # hold the write lock long enough for the others to collide
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert stores[0]._conn().execute("SELECT COUNT(*), COUNT(DISTINCT k) FROM t").fetchone() == (240, 4)


_OTHER_PROCESS_WRITER = """
import sys, time
from pathlib import Path
from mvi_node.common.sqlite import SqliteDatabase
db = SqliteDatabase(Path(sys.argv[1]))
db._conn().execute("PRAGMA busy_timeout=0")
print("ready", flush=True)
sys.stdin.readline()
for v in range(80):
    with db._tx() as conn:
        conn.execute("INSERT INTO t VALUES (1, ?)", (v,))
        time.sleep(0.0005)
"""


def test_sqlite_writers_of_two_processes_take_turns_without_the_busy_wait(tmp_path):
    """Listener processes sharing the port write one index: the writer lock's flock makes
    them take turns too (busy wait off in both: a collision would fail at once)."""
    import subprocess
    import sys
    import time

    path = tmp_path / "x.sqlite3"
    db = SqliteDatabase(path, "CREATE TABLE t (k INTEGER, v INTEGER);")
    db._conn().execute("PRAGMA busy_timeout=0")
    other = subprocess.Popen([sys.executable, "-c", _OTHER_PROCESS_WRITER, str(path)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert other.stdout.readline().strip() == "ready"
    other.stdin.write("go\n")
    other.stdin.flush()
    for v in range(80):
        with db._tx() as conn:
            conn.execute("INSERT INTO t VALUES (0, ?)", (v,))
            time.sleep(0.0005)
    _, err = other.communicate(timeout=60)
    assert other.returncode == 0, err
    assert db._conn().execute("SELECT k, COUNT(*) FROM t GROUP BY k ORDER BY k").fetchall() == [(0, 80), (1, 80)]
