"""Kindness to an archive: an instances-per-second or MB/s budget and busy hours.

The budget paces requests rather than counting afterwards: each instance is given its
slot ``1/rate`` after the previous one, shared by every concurrent retrieve of the
archive, so the rate holds over any stretch of the replay, not just on average.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Callable


class Pacer:
    """``acquire(n)`` waits for the slot of ``n`` instances. A request that overran its
    slot (a slow association) may be caught up on, by at most ``catch_up_s`` worth of
    instances, so the budget is what the replay gets, not an upper bound it never reaches."""

    def __init__(self, per_second: float = 0.0, catch_up_s: float = 0.5) -> None:
        self.per_second = per_second
        self.catch_up_s = catch_up_s
        self._next = 0.0
        self._lock = threading.Lock()

    @property
    def limited(self) -> bool:
        return self.per_second > 0

    def acquire(self, n: int = 1, stop: threading.Event | None = None) -> None:
        if not self.limited:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now - self.catch_up_s, self._next) if self._next else now
            self._next = slot + n / self.per_second
        delay = slot - time.monotonic()
        if delay > 0:
            (stop.wait(delay) if stop is not None else time.sleep(delay))


class ByteBudget(Pacer):
    """MB/s, counted after the fact: the bytes a request brought (known once staged)
    push back when the next request may start."""

    def charge(self, n: int) -> None:
        if not self.limited or n <= 0:
            return
        with self._lock:
            now = time.monotonic()
            base = max(now - self.catch_up_s, self._next) if self._next else now
            self._next = base + n / self.per_second

    def wait(self, stop: threading.Event | None = None) -> None:
        if not self.limited:
            return
        with self._lock:
            delay = self._next - time.monotonic()
        if delay > 0:
            (stop.wait(delay) if stop is not None else time.sleep(delay))


def in_busy_hours(windows: list[str], now: dt.datetime | None = None) -> bool:
    """Whether local time ``now`` lies in one of the ``HH:MM-HH:MM`` windows (a window
    may run past midnight, e.g. ``22:00-02:00``)."""
    now = now or dt.datetime.now()
    minute = now.hour * 60 + now.minute
    for w in windows:
        a, b = w.split("-")
        start = int(a[:2]) * 60 + int(a[3:])
        end = int(b[:2]) * 60 + int(b[3:])
        if (start <= minute < end) if start <= end else (minute >= start or minute < end):
            return True
    return False


def wait_while(condition: Callable[[], str], stop: threading.Event, on_pause: Callable[[str], None],
               poll: float = 5.0) -> None:
    """Block while ``condition()`` names a reason to pause (busy hours, the disk floor);
    ``on_pause`` hears the reason once per pause."""
    told = ""
    while not stop.is_set():
        reason = condition()
        if not reason:
            return
        if reason != told:
            on_pause(reason)
            told = reason
        stop.wait(poll)
