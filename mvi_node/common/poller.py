"""A background thread that repeats one pass until stopped (completion, job workers, Orthanc).

The node's loops differ only in what one pass does, so the thread, the stop event and
the error policy live here once: a pass that raises is logged and the loop goes on
(a transient database or network error must not silently stop the thread), counted
per thread name (:func:`failures`, served as ``mvi_background_errors_total``), and
``stop()`` waits a bounded time for the pass in progress. ``wake()`` ends the wait
before the next pass at once: whoever makes work for the loop (a job enqueued in this
process) calls it, so the work does not sit out the rest of ``poll_seconds``, which
remains the fallback for work made elsewhere (another process, a timer running out).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

log = logging.getLogger("mvi_node")

_failures: Counter[str] = Counter()
_failures_lock = threading.Lock()


def count_failure(thread_name: str) -> None:
    """Count an unexpected error of a background loop (the loop goes on)."""
    with _failures_lock:
        _failures[thread_name] += 1


def failures() -> dict[str, int]:
    """Unexpected errors of background loops so far in this process, by thread name."""
    with _failures_lock:
        return dict(_failures)


class Poller:
    """Subclass and implement :meth:`poll`; ``start()`` runs it on a daemon thread.

    ``poll`` returns True when more work may be waiting (the next pass starts at once)
    and False when the thread should wait ``poll_seconds`` first.
    """

    #: name of the thread (shows in logs and thread dumps)
    thread_name = "poller"
    #: how long ``stop()`` waits for a pass in progress
    join_timeout = 10.0
    #: logged with the traceback when a pass raises
    failure_message = "poll pass failed"
    logger = log

    def __init__(self, poll_seconds: float) -> None:
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        #: set by wake() and stop(): ends the wait between passes early
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> bool:
        """One pass. True: run the next pass at once; False: wait ``poll_seconds`` first."""
        raise NotImplementedError

    def pass_failed(self, exc: Exception) -> None:
        """Called inside the ``except`` of a failed pass; the loop continues after it."""
        self.logger.exception(self.failure_message)

    def first_pass(self) -> bool:
        """Runs in ``start()``, in the caller's thread, before the thread starts.

        Return True if it ran a pass (the thread then waits before its first one).
        Default: nothing, the thread's first pass runs at once.
        """
        return False

    def start(self) -> None:
        wait = self.first_pass()
        self._thread = threading.Thread(target=self._loop, args=(wait,), name=self.thread_name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run the next pass now (or right after the one in progress); any thread may call it."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.join_timeout)

    def _loop(self, wait: bool) -> None:
        while not self._stop.is_set():
            if wait:
                self._wake.wait(self.poll_seconds)
                if self._stop.is_set():
                    return
            # cleared before the pass: a wake() during the pass makes the next one start at once
            self._wake.clear()
            try:
                wait = not self.poll()
            except Exception as exc:
                count_failure(self.thread_name)
                try:
                    self.pass_failed(exc)
                except Exception:  # noqa: BLE001 - logging must not end the loop either
                    pass
                wait = True
