"""Received datasets go straight to a file, never whole into memory.

pynetdicom can write a C-STORE's dataset fragments to a temporary file as they arrive
(``_config.STORE_RECV_CHUNKED_DATASET``); it opens that file with ``NamedTemporaryFile``
in its DIMSE decoder. For associations of the node's listener that call is answered
with an :class:`IncomingFile` instead:

- it lives in ``<data_dir>/incoming/`` (the start-up reconcile clears leftovers), on the
  same disk as staging, so the disk floor sees it;
- pynetdicom's own file meta is dropped: the file holds the dataset bytes exactly as
  received, and the stager writes the node's file meta in front of them;
- past ``max_bytes`` (``[listener] max_instance_mb``) nothing more is written and the
  instance is refused once it has arrived: memory and disk stay bounded whatever the
  sender announces.

Other pynetdicom servers in the same process (the demo's receiving peer) keep
pynetdicom's behaviour. :class:`DatasetWatchdog` answers a C-STORE whose command
announced a dataset that never starts.
"""

from __future__ import annotations

import logging
import os
import struct
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pynetdicom import _config as pynetdicom_config
from pynetdicom import dimse_messages

from mvi_node.common.durable import TMP_PREFIX

log = logging.getLogger("mvi_node.receive")

_PREAMBLE_AND_PREFIX = 132
_lock = threading.Lock()
_installed = False


@dataclass(frozen=True)
class Spool:
    """Where one listener receives to, and how much one instance may be."""

    directory: Path
    max_bytes: int


class IncomingFile:
    """The file object pynetdicom writes a received dataset into (duck-types its
    ``NamedTemporaryFile``: ``write``, ``file.flush``, ``close``, ``name``)."""

    def __init__(self, spool: Spool) -> None:
        spool.directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}in-", dir=spool.directory)
        self._fd: int | None = fd
        self.name = name
        self.file = self  # pynetdicom calls ``.file.flush()`` after each fragment
        self.max_bytes = spool.max_bytes
        self.created = time.monotonic()
        self._head = bytearray()  # pynetdicom's preamble and file meta, until dropped
        self._meta_end: int | None = None
        self.size = 0  # dataset bytes received (counted past max_bytes too)
        self.fragments = 0
        self.oversize = False

    def write(self, data) -> int:
        n = len(data)
        if self._meta_end is None or len(self._head) < self._meta_end:
            self._head += data
            if self._meta_end is None and len(self._head) >= _PREAMBLE_AND_PREFIX + 12:
                # (0002,0000) UL group length: its value ends the element at offset 144
                (group_length,) = struct.unpack_from("<I", self._head, _PREAMBLE_AND_PREFIX + 8)
                self._meta_end = _PREAMBLE_AND_PREFIX + 12 + group_length
            if self._meta_end is None or len(self._head) <= self._meta_end:
                return n
            data = bytes(self._head[self._meta_end:])
            self._head = self._head[: self._meta_end]
        self.size += len(data)
        if self.oversize or self._fd is None:
            return n
        if self.size > self.max_bytes:
            self.oversize = True
            os.ftruncate(self._fd, 0)  # give the disk back at once; the rest is not kept
            return n
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        return n

    def flush(self) -> None:
        self.fragments += 1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        self.close()
        try:
            os.unlink(self.name)
        except FileNotFoundError:
            pass


def _spool_of_current_association() -> Spool | None:
    # pynetdicom decodes P-DATA in the association's DUL thread, which knows its association.
    assoc = getattr(threading.current_thread(), "assoc", None)
    server = getattr(assoc, "_server", None)
    return getattr(server, "mvi_spool", None)


_pynetdicom_tempfile = dimse_messages.NamedTemporaryFile


def _temporary_file(*args, **kwargs):
    spool = _spool_of_current_association()
    if spool is None:
        return _pynetdicom_tempfile(*args, **kwargs)
    return IncomingFile(spool)


def install() -> None:
    """Make pynetdicom receive C-STORE datasets to file (process-wide, idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
        dimse_messages.NamedTemporaryFile = _temporary_file  # type: ignore[attr-defined]
        _installed = True


class DatasetWatchdog(threading.Thread):
    """Answers 0xC000 for a C-STORE whose dataset never starts.

    A sender that announces a dataset in the command (CommandDataSetType not 0x0101)
    and then sends none would otherwise wait for its own timeout, and the association
    stay open until the node's network timeout. After ``timeout`` seconds without a
    dataset fragment the request is answered with a failure and the association goes on.
    """

    def __init__(self, ae, timeout: float, on_timeout=None, poll: float = 0.25) -> None:
        super().__init__(name="dataset-watchdog", daemon=True)
        self.ae = ae
        self.timeout = timeout
        self.poll = min(poll, timeout / 4)
        self.on_timeout = on_timeout or (lambda assoc: None)
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.wait(self.poll):
            for assoc in list(self.ae.active_associations):
                try:
                    self._check(assoc)
                except Exception:  # a probe must never take the listener down
                    log.exception("dataset watchdog failed on one association")

    def _check(self, assoc) -> None:
        dimse = getattr(assoc, "dimse", None)
        msg = getattr(dimse, "message", None)
        incoming = getattr(msg, "_data_set_file", None)
        if not isinstance(incoming, IncomingFile) or incoming.fragments:
            return
        if time.monotonic() - incoming.created < self.timeout:
            return
        from pynetdicom.dimse_primitives import C_STORE

        command = msg.command_set
        context_id = msg.context_id
        # pynetdicom resets its message state the same way once a message is complete
        dimse.message = None
        incoming.discard()
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = command.MessageID
        for keyword in ("AffectedSOPClassUID", "AffectedSOPInstanceUID"):
            try:
                setattr(rsp, keyword, getattr(command, keyword))
            except (ValueError, TypeError, AttributeError):
                pass  # optional in a response; an invalid UID is not echoed
        rsp.Status = 0xC000
        rsp.ErrorComment = "no dataset followed the C-STORE request"
        self.on_timeout(assoc)
        dimse.send_msg(rsp, context_id)
