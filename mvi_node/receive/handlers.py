"""pynetdicom event handlers: one small function per event, statuses explicit.

Logs name the calling AE, the reason and UIDs; never patient attributes. Every value a
peer sent is logged through :func:`mvi_node.logs.shown` (escaped, length-capped).

Statuses: 0xA700 only for the node's own resource problems (disk floor, a write that
failed), which a later resend can fix; what can never succeed as sent gets 0xA900,
0xC000-0xC002 or 0x0122, with an ErrorComment, so the sender does not resend it forever.
"""

from __future__ import annotations

import logging
import sqlite3

from pydicom.dataset import Dataset
from pynetdicom import evt

from mvi_node.config.sop_classes import USED_SOP_CLASSES, sop_class_name
from mvi_node.logs import shown
from mvi_node.receive.incoming import IncomingFile
from mvi_node.receive.policy import REJECT_CALLING_AE, REJECT_CONGESTION, REJECT_LOCAL_LIMIT, CallerPolicy, DiskGuard
from mvi_node.stage.file_meta import encode_file_meta
from mvi_node.stage.paths import InvalidUID, check_uid
from mvi_node.stage.ingest import (STATUS_CANNOT_UNDERSTAND, STATUS_DATASET_MISMATCH, STATUS_OUT_OF_RESOURCES, STATUS_SOP_CLASS_NOT_SUPPORTED,
                                   STATUS_TOO_LARGE, RejectedInstance, Stager)

log = logging.getLogger("mvi_node.receive")

def _status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]  # LO
    return ds


def _not_echoed(status: Dataset, sop_class: str, sop_uid: str) -> None:
    """Leave an invalid command UID out of the response: pynetdicom would otherwise copy
    it there, and a sender that checks UIDs (pynetdicom does) aborts on a response it
    cannot decode. Both are optional in a C-STORE-RSP (PS3.7 9.3.1.2)."""
    for value, keyword in ((sop_class, "AffectedSOPClassUID"), (sop_uid, "AffectedSOPInstanceUID")):
        try:
            check_uid(value, keyword)
        except InvalidUID:
            setattr(status, keyword, "")  # pynetdicom reads an empty UID as "absent"


def _calling(event) -> str:
    return event.assoc.requestor.primitive.calling_ae_title.strip()


def _requesting_peers(assoc) -> int:
    """Associations of ``assoc``'s AE (this one included) whose peer has sent its
    A-ASSOCIATE-RQ and that have not ended."""
    return sum(1 for a in list(assoc.ae.active_associations)
               if a.requestor.primitive is not None and not (a.is_released or a.is_aborted or a.is_rejected))


def _uid_text(value) -> str:
    return str(value or "").rstrip("\x00 ")


class ListenerHandlers:
    """Binds the node's policy and stager to pynetdicom events.

    ``unused``: what to do with an instance of a class no recipe reads ("store" or
    "discard"; see :data:`mvi_node.config.sop_classes.USED_SOP_CLASSES`).

    ``max_associations``: how many peers may have asked for an association at once (sent
    an A-ASSOCIATE-RQ and not yet gone); with ``peers`` (several listener processes,
    :class:`~mvi_node.receive.balance.ConnectionBalance`) those of the other processes count too. A connection that has not asked is
    not counted: a load balancer's TCP check or a port scan holds a thread until ARTIM
    closes it ([listener] request_timeout_s), never a sender's place.
    """

    def __init__(self, stager: Stager, callers: CallerPolicy, disk: DiskGuard, on_stored=None,
                 unused: str = "store", max_instance_bytes: int | None = None,
                 max_associations: int | None = None, peers=None) -> None:
        self.stager = stager
        self.callers = callers
        self.disk = disk
        self.on_stored = on_stored or (lambda outcome: None)
        self.unused = unused
        self.max_instance_bytes = max_instance_bytes
        self.max_associations = max_associations
        self.peers = peers
        self._active: set[int] = set()

    def handlers(self) -> list:
        extra = [(evt.EVT_CONN_CLOSE, self._publish_peers)] if self.peers is not None else []
        return extra + [
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
            log.warning("association rejected: calling AE '%s' from %s is not on the allow-list", shown(calling), address)
            self._reject(event, REJECT_CALLING_AE, "calling_ae")
        elif self.disk.low():
            log.error("association rejected: free disk below the floor (calling AE '%s')", shown(calling))
            self._reject(event, REJECT_CONGESTION, "disk_floor")
        elif self.max_associations is not None and not self._admits(event.assoc):
            log.warning("association rejected: %d associations in progress, the limit (calling AE '%s')",
                        self.max_associations, shown(calling))
            self._reject(event, REJECT_LOCAL_LIMIT, "limit")
        else:
            self._publish_peers(event)

    def _admits(self, assoc) -> bool:
        """Whether the peers in an association, this one included, on every listener
        process stay within the limit (decided one process at a time, and published)."""
        if self.peers is None:
            return _requesting_peers(assoc) <= self.max_associations
        return self.peers.admit(lambda: _requesting_peers(assoc), self.max_associations)[0]

    def _publish_peers(self, event) -> None:
        if self.peers is not None:
            self.peers.publish_admitted(_requesting_peers(event.assoc))

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
            log.info("association from '%s': %d proposed SOP classes not accepted", shown(calling), len(refused))
            log.debug("not accepted from '%s': %s", shown(calling), shown(", ".join(sop_class_name(u) for u in refused), 2000))

    def on_closed(self, event) -> None:
        self._active.discard(id(event.assoc))
        self._publish_peers(event)

    @property
    def active(self) -> int:
        """Associations established and not yet released or aborted (this process)."""
        return len(self._active)

    def on_echo(self, event) -> int:
        return 0x0000

    def on_dataset_timeout(self, assoc) -> None:
        calling = shown(assoc.requestor.ae_title.strip())
        log.warning("store refused from '%s': no dataset followed the C-STORE request", calling)
        self._count("rejected:no_dataset")

    def on_store(self, event) -> int | Dataset:
        calling = event.assoc.requestor.ae_title.strip()
        request = event.request
        sop_uid = _uid_text(request.AffectedSOPInstanceUID)
        sop_class = _uid_text(request.AffectedSOPClassUID)
        incoming = getattr(request, "_dataset_file", None)
        try:
            return self._store(event, calling, sop_class, sop_uid, incoming)
        except RejectedInstance as exc:
            log.warning("store refused from '%s', instance %s: %s", shown(calling), shown(sop_uid or "-"), exc.reason)
            self._count(f"rejected:{exc.code}")
            status = _status(exc.status, exc.reason)
            if exc.code == "invalid_uid":
                _not_echoed(status, sop_class, sop_uid)
            return status
        except (OSError, sqlite3.OperationalError) as exc:  # the node's storage: a resend may succeed
            log.exception("store failed from '%s', instance %s", shown(calling), shown(sop_uid or "-"))
            self._count("rejected:storage_error")
            return _status(STATUS_OUT_OF_RESOURCES, f"node storage error: {type(exc).__name__}")
        except Exception as exc:  # the node keeps serving; resending the same bytes would not help
            log.exception("store failed from '%s', instance %s", shown(calling), shown(sop_uid or "-"))
            self._count("rejected:internal")
            return _status(STATUS_CANNOT_UNDERSTAND, f"internal error: {type(exc).__name__}")

    def _store(self, event, calling: str, sop_class: str, sop_uid: str, incoming) -> int | Dataset:
        if self.disk.low():
            raise RejectedInstance(STATUS_OUT_OF_RESOURCES, "node storage is below its free-disk floor", "disk_floor")
        if isinstance(incoming, IncomingFile):
            incoming.close()
            if incoming.oversize:
                raise RejectedInstance(
                    STATUS_TOO_LARGE,
                    f"instance larger than {incoming.max_bytes >> 20} MiB (max_instance_mb)",
                    "too_large",
                )
        for value, what in ((sop_class, "AffectedSOPClassUID"), (sop_uid, "AffectedSOPInstanceUID")):
            try:
                check_uid(value, what)
            except InvalidUID as exc:
                raise RejectedInstance(STATUS_DATASET_MISMATCH, f"C-STORE request: {exc}", "invalid_uid") from None
        context_class = str(event.context.abstract_syntax)
        if sop_class != context_class:
            raise RejectedInstance(
                STATUS_SOP_CLASS_NOT_SUPPORTED,
                "SOP class differs from the presentation context's",
                "context_mismatch",
            )
        unused = sop_class not in USED_SOP_CLASSES
        if unused and self.unused == "discard":
            self._count(f"unused:discard:{sop_class}")
            log.debug("instance %s of unused class %s acknowledged and discarded", shown(sop_uid), sop_class_name(sop_class))
            return 0x0000
        transfer_syntax = str(event.context.transfer_syntax)
        meta = encode_file_meta(sop_class, sop_uid, transfer_syntax, calling)
        if isinstance(incoming, IncomingFile) and incoming.meta == meta:
            # received behind this very file meta: checked there, renamed into staging
            outcome = self.stager.store_received(incoming.name, incoming.offset, transfer_syntax, sop_class, sop_uid,
                                                 calling_ae=calling, seal=incoming.seal if incoming.sealable else None)
        elif isinstance(incoming, IncomingFile):
            outcome = self.stager.store_file(meta, incoming.name, transfer_syntax, sop_class, sop_uid, calling_ae=calling,
                                             offset=incoming.offset)
        else:  # received to memory (CommandDataSetType 0x0101: no dataset at all)
            dataset = request_bytes(event.request)
            outcome = self.stager.store([meta, dataset], dataset, transfer_syntax, sop_class, sop_uid, calling_ae=calling)
        if outcome.duplicate:
            log.info("duplicate instance %s from '%s': already staged", sop_uid, shown(calling))
        elif unused:
            self._count(f"unused:store:{sop_class}")
        self.on_stored(outcome)
        return 0x0000


def request_bytes(request) -> bytes:
    data = getattr(request, "DataSet", None)
    return data.getvalue() if data is not None else b""
