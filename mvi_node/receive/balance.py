"""Several listener processes on one listening socket, each new connection to the least busy.

Why not ``SO_REUSEPORT`` (one socket per process): the kernel hashes each connection's
addresses to one of the sockets, blind to how busy its process is. Four senders on two
processes landed 2:2 in 16 of 40 tries on loopback, 3:1 in 17 and 4:0 in 7, so a second
process mostly added an interpreter and no parallel work (bench/RESULTS.md, #15).

Here the processes share the one socket (the parent's, inherited), all of them wait on it,
and a process that holds more connections than the least busy one leaves a waiting
connection to that one for up to :data:`YIELD_SECONDS`. After that it takes it itself, so a
stalled or dead process costs a sender at most that delay, never the connection. A process
counts as absent (never the least busy) until its listener starts and after it stops.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

#: how long a busier process leaves a waiting connection to a less busy one
YIELD_SECONDS = 0.02
#: how often it looks whether the connection is still waiting meanwhile
_LOOK_SECONDS = 0.001
#: the count of a process not (or no longer) accepting: never the least busy
ABSENT = 1 << 30
#: how long an admission waits for another process's admission decision; a process killed
#: while deciding holds the lock for ever, so after this the count is taken without it
ADMIT_LOCK_SECONDS = 0.5


class ConnectionBalance:
    """This process's slot in the listener processes' shared connection counts.

    ``counts``: one int per listener process, in shared memory (``RawArray("i", n)``, made
    by :meth:`shared`): its open connections; ``admitted``: its peers in an association
    (sent an A-ASSOCIATE-RQ and admitted), so ``[listener] max_associations`` bounds the
    node, not each process's share of it. Each process writes only its own slots.
    ``admission``: a lock shared by the processes (``ctx.Lock()``) under which one
    admission at a time is decided and published (:meth:`admit`)."""

    def __init__(self, counts: Any, slot: int, admitted: Any = None, admission: Any = None) -> None:
        if not 0 <= slot < len(counts):
            raise ValueError(f"listener slot {slot} outside the {len(counts)} processes")
        self.counts = counts
        self.admitted = admitted if admitted is not None else [0] * len(counts)
        self.slot = slot
        self._lock = threading.Lock()
        self._admission = admission if admission is not None else threading.Lock()
        self._shared_admission = admission

    @classmethod
    def shared(cls, processes: int, ctx: Any) -> "ConnectionBalance":
        """Slot 0 of new counts for ``processes`` listener processes (``ctx``: the
        multiprocessing context the other processes are started with), all absent."""
        counts = ctx.RawArray("i", processes)
        counts[:] = [ABSENT] * processes
        return cls(counts, 0, ctx.RawArray("i", processes), ctx.Lock())

    def __reduce__(self):  # to a listener process: the shared counts and lock, not this process's lock
        return ConnectionBalance, (self.counts, self.slot, self.admitted, self._shared_admission)

    def for_slot(self, slot: int) -> "ConnectionBalance":
        return ConnectionBalance(self.counts, slot, self.admitted, self._shared_admission)

    @property
    def mine(self) -> int:
        return int(self.counts[self.slot])

    def join(self) -> None:
        """This process's listener accepts from now on."""
        with self._lock:
            self.counts[self.slot] = 0

    def leave(self) -> None:
        """This process's listener accepts no more (and its associations count no more)."""
        with self._lock:
            self.counts[self.slot] = ABSENT
            self.admitted[self.slot] = 0

    def publish_admitted(self, n: int) -> None:
        """This process now has ``n`` peers in an association."""
        self.admitted[self.slot] = n

    def admitted_elsewhere(self) -> int:
        """Peers in an association on the other accepting listener processes."""
        return sum(int(self.admitted[i]) for i in range(len(self.counts))
                   if i != self.slot and self.counts[i] < ABSENT)

    def admit(self, own: Callable[[], int], limit: int, wait: float = ADMIT_LOCK_SECONDS) -> tuple[bool, int]:
        """Whether one more association fits under ``limit`` on all listener processes
        together, and the peers counted: ``own()`` gives this process's peers in an
        association, the new one included; when it fits, that count is published before any
        other process decides, so two processes admitting at the same moment cannot both
        take the last place. A lock not had within ``wait`` (its holder died deciding):
        decided on the counts as they are, as before this lock existed."""
        locked = self._admission.acquire(timeout=wait)
        if not locked:
            log.warning("association admission: another listener process held the decision for %.1f s; "
                        "counted without it", wait)
        try:
            elsewhere = self.admitted_elsewhere()
            n = own()
            total = n + elsewhere
            if total > limit:
                return False, total
            self.admitted[self.slot] = n
            return True, total
        finally:
            if locked:
                self._admission.release()

    def opened(self) -> None:
        with self._lock:
            if self.counts[self.slot] < ABSENT:
                self.counts[self.slot] += 1

    def closed(self, _event: Any = None) -> None:
        """A connection of this process ended (also bound to pynetdicom's EVT_CONN_CLOSE)."""
        with self._lock:
            if 0 < self.counts[self.slot] < ABSENT:
                self.counts[self.slot] -= 1

    def accepting(self) -> int:
        """How many of the listener processes accept now."""
        return sum(1 for c in self.counts[:] if c < ABSENT)

    def open(self) -> int:
        """Connections open on all listener processes together."""
        return sum(c for c in self.counts[:] if c < ABSENT)

    def busier(self) -> bool:
        """Whether another listener process holds fewer connections than this one."""
        mine = self.counts[self.slot]
        return any(self.counts[i] < mine for i in range(len(self.counts)) if i != self.slot)

    def claim(self, listening: Any, wait: float = YIELD_SECONDS) -> bool:
        """Whether to accept the connection waiting on ``listening`` now: at once when no
        process is less busy; else once ``wait`` has passed with the connection still
        waiting. False: another process took it meanwhile."""
        deadline = time.monotonic() + wait
        while self.busier() and time.monotonic() < deadline:
            time.sleep(_LOOK_SECONDS)
            if not select.select([listening], [], [], 0)[0]:
                return False
        return True
