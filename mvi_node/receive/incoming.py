"""Received datasets go straight to a file, never whole into memory.

pynetdicom can write a C-STORE's dataset fragments to a temporary file as they arrive
(``_config.STORE_RECV_CHUNKED_DATASET``); it opens that file with ``NamedTemporaryFile``
in its DIMSE decoder. For associations of the node's listener that call is answered
with an :class:`IncomingFile` instead:

- it lives in ``<data_dir>/incoming/`` (the start-up reconcile clears leftovers), on the
  same disk as staging, so the disk floor sees it;
- it starts with the node's own file meta (built from the command set the moment the
  dataset begins; pynetdicom's is never built), then the dataset bytes exactly as
  received: once checked, the file is fsynced and renamed into staging as it is;
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
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from pynetdicom import _config as pynetdicom_config
from pynetdicom import dimse_messages

from mvi_node.common import filepool
from mvi_node.common.durable import TMP_PREFIX
from mvi_node.stage.file_meta import encode_file_meta

log = logging.getLogger("mvi_node.receive")

_PREAMBLE_AND_PREFIX = 132
_lock = threading.Lock()
_installed = False


@dataclass(frozen=True)
class Spool:
    """Where one listener receives to, and how much one instance may be."""

    directory: Path
    max_bytes: int
    #: files whose names are already durable (one fsync per instance instead of two)
    pool: filepool.FilePool | None = None


class IncomingFile:
    """The file object pynetdicom writes a received dataset into (duck-types its
    ``NamedTemporaryFile``: ``write``, ``file.flush``, ``close``, ``name``).

    ``meta``: the node's file meta for this instance, written first (None when the
    command's UIDs cannot be encoded: such a request is refused anyway). pynetdicom's
    preamble and ``DICM`` prefix (its first 132 bytes) are dropped.
    """

    def __init__(self, spool: Spool, meta: bytes | None = None) -> None:
        pooled = spool.pool.take() if spool.pool is not None else None
        if pooled is not None:
            fd, name = os.open(pooled, os.O_WRONLY), pooled
        else:  # no pool, or it ran dry in a burst: a new file, whose name staging makes durable
            spool.directory.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}in-", dir=spool.directory)
            os.fchmod(fd, 0o640)
        self._fd: int | None = fd
        self.name = name
        self.pooled = pooled is not None
        self.file = self  # pynetdicom calls ``.file.flush()`` after each fragment
        self.meta = meta
        self.offset = 0  # where the dataset starts in the file
        self._crc = 0  # CRC-32 of the file from byte 128 on (the seal's checksum)
        if meta:
            _write_all(fd, meta)
            self.offset = len(meta)
            self._crc = zlib.crc32(memoryview(meta)[filepool.PREAMBLE_LENGTH:])
        self.max_bytes = spool.max_bytes
        self.created = time.monotonic()
        self._drop = _PREAMBLE_AND_PREFIX
        self.size = 0  # dataset bytes received (counted past max_bytes too)
        self.fragments = 0
        self.oversize = False

    def write(self, data) -> int:
        n = len(data)
        if self._drop:
            step = min(self._drop, n)
            self._drop -= step
            data = data[step:]
            if not data:
                return n
        self.size += len(data)
        if self.oversize or self._fd is None:
            return n
        if self.size > self.max_bytes:
            self.oversize = True
            os.ftruncate(self._fd, 0)  # give the disk back at once; the rest is not kept
            return n
        _write_all(self._fd, data)
        if self.pooled:
            self._crc = zlib.crc32(data, self._crc)  # releases the GIL for fragment-sized data
        return n

    @property
    def sealable(self) -> bool:
        """Whether :meth:`seal` can make this file durable in place (see :mod:`mvi_node.common.filepool`)."""
        return self.pooled and bool(self.meta) and not self.oversize

    def seal(self) -> None:
        """Make the complete file durable under its pool name with one ``fdatasync``."""
        if not self.sealable:
            raise ValueError("only a complete file taken from the pool can be sealed")
        self.close()
        filepool.seal(self.name, self.offset + self.size, self._crc)

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


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _current_association():
    # pynetdicom decodes P-DATA in the association's DUL thread, which knows its association.
    return getattr(threading.current_thread(), "assoc", None)


def _spool_of(assoc) -> Spool | None:
    return getattr(getattr(assoc, "_server", None), "mvi_spool", None)


def _node_file_meta(assoc) -> bytes | None:
    """The node's file meta for the C-STORE whose command was just decoded."""
    try:
        msg = assoc.dimse.message
        command = msg.command_set
        transfer_syntax = assoc._accepted_cx[msg.context_id].transfer_syntax[0]
        return encode_file_meta(
            str(command.AffectedSOPClassUID).rstrip("\x00 "),
            str(command.AffectedSOPInstanceUID).rstrip("\x00 "),
            str(transfer_syntax),
            assoc.requestor.ae_title.strip(),
        )
    except Exception:  # UIDs that do not encode: the handler refuses the request
        return None


_pynetdicom_tempfile = dimse_messages.NamedTemporaryFile
_pynetdicom_create_file_meta = dimse_messages.create_file_meta
_pydicom_write_file_meta_info = dimse_messages.write_file_meta_info


def _temporary_file(*args, **kwargs):
    assoc = _current_association()
    spool = _spool_of(assoc)
    if spool is None:
        return _pynetdicom_tempfile(*args, **kwargs)
    return IncomingFile(spool, _node_file_meta(assoc))


def _create_file_meta(**kwargs):
    if _spool_of(_current_association()) is not None:
        return None  # never written: the IncomingFile carries the node's own
    return _pynetdicom_create_file_meta(**kwargs)


def _write_file_meta_info(fp, file_meta, *args, **kwargs):
    if isinstance(fp, IncomingFile):
        return None
    return _pydicom_write_file_meta_info(fp, file_meta, *args, **kwargs)


def install() -> None:
    """Make pynetdicom receive C-STORE datasets to file (process-wide, idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
        dimse_messages.NamedTemporaryFile = _temporary_file  # type: ignore[attr-defined]
        dimse_messages.create_file_meta = _create_file_meta  # type: ignore[attr-defined]
        dimse_messages.write_file_meta_info = _write_file_meta_info  # type: ignore[attr-defined]
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
