"""Background loops outlive unexpected errors: logged, counted per thread, and served as
``mvi_background_errors_total`` by the admin API's collector."""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, generate_latest

from mvi_node.admin.collector import NodeCollector
from mvi_node.common.poller import Poller, failures
from mvi_node.jobs.sqlite import SqliteJobStore
from mvi_node.stage.index import StagingIndex


class Flaky(Poller):
    """Fails its first three passes with errors no loop expects, then works."""

    thread_name = "flaky-test-loop"

    def __init__(self) -> None:
        super().__init__(0.01)
        self.passes = 0
        self.worked = threading.Event()

    def poll(self) -> bool:
        self.passes += 1
        if self.passes <= 2:
            raise KeyError("boom")
        if self.passes == 3:
            raise ZeroDivisionError
        self.worked.set()
        return False

    def pass_failed(self, exc: Exception) -> None:
        if isinstance(exc, ZeroDivisionError):
            raise RuntimeError("a handler that itself fails")  # must not end the loop either
        super().pass_failed(exc)


def test_a_loop_keeps_going_after_unexpected_errors_and_counts_them(tmp_path, caplog):
    before = failures().get(Flaky.thread_name, 0)
    loop = Flaky()
    loop.start()
    try:
        assert loop.worked.wait(5), "the loop stopped after an error"
    finally:
        loop.stop()
    assert failures()[Flaky.thread_name] - before == 3
    assert sum("poll pass failed" in r.getMessage() for r in caplog.records) == 2
    registry = CollectorRegistry()
    registry.register(NodeCollector(StagingIndex(tmp_path / "i.sqlite3"), SqliteJobStore(tmp_path / "j.sqlite3"),
                                    tmp_path))
    text = generate_latest(registry).decode()
    assert f'mvi_background_errors_total{{thread="{Flaky.thread_name}"}} {before + 3}.0' in text
