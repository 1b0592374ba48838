"""A DICOM sender that sends what it is told, byte for byte: hostile input for the listener.

pynetdicom validates and re-encodes what it sends; this helper does not. It opens a
normal association (pynetdicom's ACSE) and then writes the C-STORE command set and the
dataset fragments itself, so a test can send any command UID (a newline in it, a class
that differs from the context), any dataset bytes (truncated, deflate bombs, nothing at
all) on any accepted presentation context, and read the status that comes back.

Used by the hostile-input tests and by ``bench/fuzz_ingest.py``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from mvi_node.common.scu import reactor_paused

NO_DATASET = object()  #: send the command with CommandDataSetType 0x0101 (no dataset)


def _elem(tag_elem: int, value: bytes) -> bytes:
    # Command sets are implicit VR little endian, group 0000.
    if len(value) % 2:
        value += b"\x00"
    return struct.pack("<HHI", 0x0000, tag_elem, len(value)) + value


def encode_store_command(sop_class: bytes | str, sop_instance: bytes | str, message_id: int = 1,
                         has_dataset: bool = True) -> bytes:
    """A C-STORE-RQ command set with the UIDs exactly as given (no validation)."""
    sop_class = sop_class.encode("latin-1") if isinstance(sop_class, str) else sop_class
    sop_instance = sop_instance.encode("latin-1") if isinstance(sop_instance, str) else sop_instance
    body = b"".join([
        _elem(0x0002, sop_class),
        _elem(0x0100, struct.pack("<H", 0x0001)),  # C-STORE-RQ
        _elem(0x0110, struct.pack("<H", message_id)),
        _elem(0x0700, struct.pack("<H", 0x0002)),  # priority low
        _elem(0x0800, struct.pack("<H", 0x0001 if has_dataset else 0x0101)),
        _elem(0x1000, sop_instance),
    ])
    return _elem(0x0000, struct.pack("<I", len(body))) + body


@dataclass
class Response:
    status: int | None  #: None: no response before the timeout
    comment: str = ""


class RawStoreSCU:
    """One association to the node with the given presentation contexts.

    ``contexts``: (abstract syntax, transfer syntax) pairs to propose.
    """

    def __init__(self, port: int, contexts: list[tuple[str, str]], calling: str = "HOSTILE",
                 called: str = "MVI_NODE", timeout: float = 30.0, max_pdu: int = 16384,
                 tls_args=None) -> None:
        ae = AE(ae_title=calling)
        ae.acse_timeout = timeout
        ae.dimse_timeout = timeout
        ae.network_timeout = timeout
        ae.maximum_pdu_size = max_pdu
        for abstract, ts in contexts:
            ae.add_requested_context(abstract, ts)
        if not any(a == Verification for a, _ in contexts):
            ae.add_requested_context(Verification)
        self.max_pdu = max_pdu
        self.assoc = ae.associate("127.0.0.1", port, ae_title=called, tls_args=tls_args)
        if not self.assoc.is_established:
            raise ConnectionError("association not established")
        # The command and the dataset go as separate small PDUs: without NODELAY the
        # second waits for the node's delayed ACK (40 ms a store on loopback).
        import socket

        self.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._message_id = 0

    def context_id(self, abstract: str, transfer_syntax: str | None = None) -> int:
        for cx in self.assoc.accepted_contexts:
            if cx.abstract_syntax == abstract and (transfer_syntax is None or cx.transfer_syntax[0] == transfer_syntax):
                return int(cx.context_id)
        raise LookupError(f"no accepted context for {abstract}")

    def accepted(self, abstract: str) -> bool:
        return any(cx.abstract_syntax == abstract for cx in self.assoc.accepted_contexts)

    def store(self, dataset, sop_class: str | bytes, sop_instance: str | bytes, context: str | None = None,
              transfer_syntax: str | None = None, empty_fragment: bool = False) -> Response:
        """Send one C-STORE and wait for its response.

        ``dataset``: the bytes to send as the dataset, or :data:`NO_DATASET`. ``b""`` with
        ``empty_fragment`` sends one final dataset fragment holding nothing; without it,
        the command announces a dataset and none follows (a broken sender).
        ``context``: the abstract syntax whose context carries it (default: ``sop_class``).
        """
        if context is None:
            context = sop_class.decode("latin-1") if isinstance(sop_class, bytes) else sop_class
        cx_id = self.context_id(context, transfer_syntax)
        self._message_id += 1
        has_dataset = dataset is not NO_DATASET
        command = encode_store_command(sop_class, sop_instance, self._message_id, has_dataset)
        assoc = self.assoc
        with self.reactor_paused():
            self._send_pdv(cx_id, 0x03, command)
            if has_dataset:
                data = memoryview(dataset)
                step = self.max_pdu - 6 if assoc.acceptor.maximum_length == 0 else min(
                    self.max_pdu, assoc.acceptor.maximum_length) - 6
                if not data:
                    if empty_fragment:
                        self._send_pdv(cx_id, 0x02, b"")
                for start in range(0, len(data), step):
                    last = start + step >= len(data)
                    self._send_pdv(cx_id, 0x02 if last else 0x00, bytes(data[start:start + step]))
            _cx, rsp = assoc.dimse.get_msg(block=True)
        if rsp is None:
            return Response(None)
        return Response(int(rsp.Status), str(getattr(rsp, "ErrorComment", "") or ""))

    def reactor_paused(self):
        """The association's reactor kept off the DIMSE queue while the block sends and
        takes its response (the node's own senders do the same: mvi_node.common.scu)."""
        return reactor_paused(self.assoc)

    def _send_pdv(self, cx_id: int, header: int, payload: bytes) -> None:
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((cx_id, bytes([header]) + payload))
        self.assoc.dul.send_pdu(pdata)

    def echo(self) -> int | None:
        """One C-ECHO, its response taken off the queue here (as :meth:`store`): pynetdicom's
        ``send_c_echo`` pauses the reactor with the window :meth:`_pause_reactor` describes,
        and a node that answers within it has its response dropped by the reactor."""
        from pynetdicom.dimse_primitives import C_ECHO

        self._message_id += 1
        req = C_ECHO()
        req.MessageID = self._message_id
        req.AffectedSOPClassUID = Verification
        cx_id = self.context_id(Verification)
        with self.reactor_paused():
            self.assoc.dimse.send_msg(req, cx_id)
            _cx, rsp = self.assoc.dimse.get_msg(block=True)
        return int(rsp.Status) if rsp is not None and rsp.Status is not None else None

    @property
    def alive(self) -> bool:
        return self.assoc.is_established

    def release(self) -> None:
        if self.assoc.is_established:
            self.assoc.release()

    def abort(self) -> None:
        if self.assoc.is_established:
            self.assoc.abort()

    def __enter__(self) -> "RawStoreSCU":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def dataset_bytes(path) -> tuple[bytes, str, str, str]:
    """(dataset bytes without file meta, SOP class, SOP instance, transfer syntax) of a Part 10 file."""
    from pydicom.filereader import read_preamble, _read_file_meta_info  # type: ignore[attr-defined]

    with open(path, "rb") as fh:
        read_preamble(fh, False)
        meta = _read_file_meta_info(fh)
        data = fh.read()
    return data, str(meta.MediaStorageSOPClassUID), str(meta.MediaStorageSOPInstanceUID), str(meta.TransferSyntaxUID)


DEFAULT_TS = ExplicitVRLittleEndian
