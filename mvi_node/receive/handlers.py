"""pynetdicom event handlers: one small function per event, statuses explicit.

Logs name the calling AE, the reason and UIDs; never patient attributes.
"""

from __future__ import annotations

import logging

from pydicom.dataset import Dataset
from pynetdicom import evt

from mvi_node.receive.policy import REJECT_CALLING_AE, REJECT_CONGESTION, CallerPolicy, DiskGuard
from mvi_node.config.sop_classes import sop_class_name
from mvi_node.stage.file_meta import encode_file_meta
from mvi_node.stage.ingest import STATUS_OUT_OF_RESOURCES, RejectedInstance, Stager

log = logging.getLogger("mvi_node.receive")

def _status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]  # LO
    return ds


def _calling(event) -> str:
    return event.assoc.requestor.primitive.calling_ae_title.strip()


class ListenerHandlers:
    """Binds the node's policy and stager to pynetdicom events."""

    def __init__(self, stager: Stager, callers: CallerPolicy, disk: DiskGuard, on_stored=None) -> None:
        self.stager = stager
        self.callers = callers
        self.disk = disk
        self.on_stored = on_stored or (lambda outcome: None)
        self._active: set[int] = set()

    def handlers(self) -> list:
        return [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_RELEASED, self.on_closed),
            (evt.EVT_ABORTED, self.on_closed),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
        ]

    def on_requested(self, event) -> None:
        calling = _calling(event)
        address = event.assoc.requestor.address
        if not self.callers.admits(calling, address):
            log.warning("association rejected: calling AE %r from %s is not on the allow-list", calling, address)
            self._reject(event, REJECT_CALLING_AE, "calling_ae")
        elif self.disk.low():
            log.error("association rejected: free disk below the floor (calling AE %r)", calling)
            self._reject(event, REJECT_CONGESTION, "disk_floor")

    def _count(self, name: str) -> None:
        try:
            self.stager.index.bump(name)
        except Exception:  # a tally must never cost an acknowledgement
            log.exception("could not count %s", name)

    def _reject(self, event, codes: tuple[int, int, int], reason: str) -> None:
        self._count(f"associations_rejected:{reason}")
        event.assoc.acse.send_reject(*codes)
        # kill() waits until the DUL has sent the A-ASSOCIATE-RJ; without it the socket
        # is closed first and the peer only sees an abort, with no reason.
        event.assoc.kill()

    def on_accepted(self, event) -> None:
        # Senders such as storescu +sd propose every storage class they know; one
        # summary line per association, the names only at DEBUG.
        self._active.add(id(event.assoc))
        refused = sorted({cx.abstract_syntax for cx in event.assoc.rejected_contexts})
        if refused:
            calling = event.assoc.requestor.ae_title.strip()
            log.info("association from %r: %d proposed SOP classes not accepted", calling, len(refused))
            log.debug("not accepted from %r: %s", calling, ", ".join(sop_class_name(u) for u in refused))

    def on_closed(self, event) -> None:
        self._active.discard(id(event.assoc))

    @property
    def active(self) -> int:
        """Associations established and not yet released or aborted (this process)."""
        return len(self._active)

    def on_echo(self, event) -> int:
        return 0x0000

    def on_store(self, event) -> int | Dataset:
        calling = event.assoc.requestor.ae_title.strip()
        request = event.request
        sop_uid = str(request.AffectedSOPInstanceUID or "")
        if self.disk.low():
            log.error("store refused from %r: free disk below the floor (%s)", calling, sop_uid)
            self._count("rejected:disk_floor")
            return _status(STATUS_OUT_OF_RESOURCES, "node storage is below its free-disk floor")
        dataset = request.DataSet.getvalue()
        sop_class = str(request.AffectedSOPClassUID or "")
        transfer_syntax = str(event.context.transfer_syntax)
        try:
            meta = encode_file_meta(sop_class, sop_uid, transfer_syntax, calling)
            outcome = self.stager.store(
                [meta, dataset], dataset, transfer_syntax, sop_class, sop_uid, calling_ae=calling
            )
        except RejectedInstance as exc:
            log.warning("store refused from %r, instance %s: %s", calling, sop_uid or "-", exc.reason)
            self._count(f"rejected:{exc.code}")
            return _status(exc.status, exc.reason)
        except Exception as exc:  # the node keeps serving; the sender may retry later
            log.exception("store failed from %r, instance %s", calling, sop_uid or "-")
            self._count("rejected:internal")
            return _status(STATUS_OUT_OF_RESOURCES, f"internal error: {type(exc).__name__}")
        if outcome.duplicate:
            log.info("duplicate instance %s from %r: already staged", sop_uid, calling)
        self.on_stored(outcome)
        return 0x0000
