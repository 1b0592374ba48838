"""The node's outgoing associations (dispatch, replay, demo): no response lost to pynetdicom's reactor.

pynetdicom (3.0.4) runs a reactor thread per association that polls the DIMSE queue for
requests from the peer. Its ``send_c_*`` and ``release`` keep that thread off the queue
by clearing ``_reactor_checkpoint`` and waiting until the reactor says ``_is_paused``.
The flag has a window: right after one ``send_c_*`` sets the checkpoint again, the
reactor still shows the old ``_is_paused = True`` while it wakes to poll the queue once
more. A next ``send_c_*`` started in that window sends at once; when the peer answers
before the reactor's poll, the reactor takes the response off the queue and drops it,
and the sender waits its whole DIMSE timeout and aborts. A fast loopback peer hit this
about once in 10,000 stores; for dispatch it means a retried job and a duplicate send
after the timeout.

:func:`reactor_paused` closes the window: it resets the flag, so only the reactor's next
pass can raise it, then waits for that pass. Use it around every ``send_c_*`` of an
association the node requested (for C-FIND, C-GET and C-MOVE, which are generators,
around the loop that takes their responses).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

#: how long to wait for the reactor's next pass; it polls every millisecond, so this is
#: only reached when it was already blocked on the checkpoint (see below) or descheduled
SETTLE_S = 0.5


@contextmanager
def reactor_paused(assoc) -> Iterator[None]:
    """Inside the block ``assoc``'s reactor thread is really paused (or ended)."""
    assoc._reactor_checkpoint.clear()
    assoc._is_paused = False
    deadline = time.monotonic() + SETTLE_S
    while not assoc._is_paused and time.monotonic() < deadline:
        time.sleep(0.0001)
    if not assoc._is_paused:
        # No pass came: the reactor had already raised the flag and is blocked on the
        # cleared checkpoint (or has ended). Raise it again, or pynetdicom's own wait for
        # it would never end.
        assoc._is_paused = True
    try:
        yield
    finally:
        assoc._reactor_checkpoint.set()

