"""The listener's hand-written C-STORE command set codec (mvi_node.receive.command_set,
issue #15's ingest speed): byte-for-byte what pynetdicom encodes, value-for-value what
pynetdicom decodes, pynetdicom's path for everything it does not cover, and used by the
node's own associations."""

from __future__ import annotations

import random
import struct
from io import BytesIO

import pytest
from pydicom import dcmread
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

from conftest import free_port
from mvi_node.receive import command_set
from mvi_node.synth.plain_series import plain_ct_series

CT = "1.2.840.10008.5.1.4.1.1.2"
SOP = "1.2.826.0.1.3680043.8.498.1234567890123456789012345678"


def _pynetdicom_bytes(msg_cls, primitive) -> bytes:
    m = msg_cls()
    m.primitive_to_message(primitive)
    pdata = next(m.encode_msg(1, 0))  # the command set; a request's dataset follows
    return bytes(pdata.presentation_data_value_list[0][1][1:])


def _response(**fields) -> C_STORE:
    rsp = C_STORE()
    rsp.MessageID = rsp.MessageIDBeingRespondedTo = fields.pop("message_id", 7)  # as pynetdicom's SCP sets both
    rsp.Status = fields.pop("status", 0x0000)
    for k, v in fields.items():
        setattr(rsp, k, v)
    return rsp


@pytest.mark.parametrize("fields", [
    {"AffectedSOPClassUID": CT, "AffectedSOPInstanceUID": SOP},
    {"AffectedSOPClassUID": CT, "AffectedSOPInstanceUID": "1.2.3", "message_id": 65535},  # odd UI: padded
    {"status": 0xC000, "ErrorComment": "no dataset followed the C-STORE request"},
    {"status": 0xA900, "ErrorComment": "odd", "AffectedSOPClassUID": CT},  # odd LO: space-padded
    {"status": 0xC000, "OffendingElement": [0x00080018, 0x00100020], "AffectedSOPInstanceUID": SOP},
    {"status": 0xB000, "ErrorComment": "coerced", "OffendingElement": [0x00280010]},
    {"status": 0xA700},
])
def test_store_responses_are_the_bytes_pynetdicom_encodes(fields):
    rsp = _response(**fields)
    assert command_set.store_response(rsp) == _pynetdicom_bytes(C_STORE_RSP, rsp)


def test_what_the_response_encoder_does_not_cover_goes_to_pynetdicom():
    assert command_set.store_response(_response(ErrorComment="Überlauf")) is None  # not ASCII
    request = C_STORE()
    request.MessageID, request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = 1, CT, SOP
    assert command_set.store_response(request) is None  # a request, not a response


def _request_bytes(**fields) -> bytes:
    rq = C_STORE()
    rq.MessageID = fields.pop("message_id", 3)
    rq.AffectedSOPClassUID = fields.pop("sop_class", CT)
    rq.AffectedSOPInstanceUID = fields.pop("sop_instance", SOP)
    rq.Priority = fields.pop("priority", 2)
    for k, v in fields.items():
        setattr(rq, k, v)
    rq.DataSet = BytesIO(b"\x08\x00\x18\x00")
    return _pynetdicom_bytes(C_STORE_RQ, rq)


def _pynetdicom_request(raw: bytes):
    """pynetdicom's own decoding of a command set (its dataset kept in memory: a node started
    earlier in this process has switched pynetdicom to receiving datasets to file, which
    needs an association)."""
    from pynetdicom import _config

    msg = DIMSEMessage()
    pdata = P_DATA()
    pdata.presentation_data_value_list.append((1, b"\x03" + raw))
    chunked, _config.STORE_RECV_CHUNKED_DATASET = _config.STORE_RECV_CHUNKED_DATASET, False
    try:
        msg.decode_msg(pdata)
    finally:
        _config.STORE_RECV_CHUNKED_DATASET = chunked
    return msg.message_to_primitive()


@pytest.mark.parametrize("fields", [{}, {"message_id": 65535, "priority": 0}, {"sop_instance": "1.2.3"},
                                    {"sop_class": "1.2.840.10008.5.1.4.1.1.7"}])
def test_store_requests_decode_to_the_values_pynetdicom_decodes(fields):
    raw = _request_bytes(**fields)
    fast, slow = command_set.store_request(raw).to_primitive(), _pynetdicom_request(raw)
    for k in ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority",
              "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID"):
        assert getattr(fast, k) == getattr(slow, k), k
    # what the node's file meta and dataset watchdog read, as pynetdicom's Dataset has it
    ds = command_set.store_request(raw).to_dataset()
    assert ds.AffectedSOPInstanceUID == SOP if "sop_instance" not in fields else True
    assert ds.MessageID == fields.get("message_id", 3) and ds.CommandField == 0x0001


def test_what_the_request_decoder_does_not_cover_goes_to_pynetdicom():
    raw = _request_bytes()
    assert command_set.store_request(raw) is not None
    moved = _request_bytes(MoveOriginatorApplicationEntityTitle="PACS", MoveOriginatorMessageID=9)
    assert command_set.store_request(moved) is None  # a C-MOVE's store: pynetdicom decodes it
    assert command_set.store_request(raw[:-3]) is None  # truncated inside the last value
    assert command_set.store_request(raw[:5]) is None  # inside an element header
    no_data = raw.replace(struct.pack("<HHIH", 0, 0x0800, 2, 0x0001), struct.pack("<HHIH", 0, 0x0800, 2, 0x0101))
    assert no_data != raw and command_set.store_request(no_data) is None  # announces no dataset
    echo = raw.replace(struct.pack("<HHIH", 0, 0x0100, 2, 0x0001), struct.pack("<HHIH", 0, 0x0100, 2, 0x0030))
    assert echo != raw and command_set.store_request(echo) is None  # another command
    two = _request_bytes(sop_instance=SOP[:-5])  # a multi-valued UID (backslash), as pydicom splits it
    two = two.replace(SOP[:-5].encode(), b"1.2.3\\4.5.6.7.8.9.10")
    assert command_set.store_request(two) is None
    twice = raw + struct.pack("<HHI", 0, 0x0110, 2) + struct.pack("<H", 4)  # a repeated element
    assert command_set.store_request(twice) is None


def test_mutated_request_command_sets_decode_as_pynetdicom_or_not_at_all():
    """Random byte flips, truncations and insertions of a real command set: whatever the
    fast decoder accepts, pynetdicom decodes to the same request."""
    rng = random.Random(15)
    base = _request_bytes()
    accepted = 0
    for _ in range(3000):
        raw = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            kind = rng.random()
            if not raw:
                break
            at = rng.randrange(len(raw))
            if kind < 0.6:
                raw[at] = rng.randrange(256)
            elif kind < 0.8:
                del raw[at:]
            else:
                raw[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        fast = command_set.store_request(bytes(raw))
        if fast is None:
            continue
        try:
            mine = fast.to_primitive()
        except (ValueError, TypeError):
            mine = None
        try:
            slow = _pynetdicom_request(bytes(raw))
        except Exception:  # noqa: BLE001 - pynetdicom refuses it: so must the node's setters
            assert mine is None, bytes(raw)
            continue
        accepted += 1
        assert mine is not None
        for k in ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority"):
            assert getattr(mine, k) == getattr(slow, k), (k, bytes(raw))
    assert accepted > 100  # the mutations left many requests the fast path takes


def test_the_nodes_associations_take_the_hand_written_path_and_store_what_was_sent(tmp_path, monkeypatch):
    from pynetdicom import AE

    from mvi_node.app.node import Node
    from mvi_node.config import load_settings
    from mvi_node.receive import association

    decoded, encoded = [], []
    real_rq, real_rsp = command_set.store_request, command_set.store_response
    monkeypatch.setattr(association.command_set, "store_request", lambda raw: decoded.append(r := real_rq(raw)) or r)
    monkeypatch.setattr(association.command_set, "store_response",
                        lambda rsp: encoded.append(r := real_rsp(rsp)) or r)
    files = plain_ct_series(tmp_path / "src", slices=3, matrix=64, seed=9)
    node = Node(load_settings(None, {"data_dir": str(tmp_path / "var"), "listener.port": free_port(),
                                     "admin.enabled": False, "inference.warm_up": False}))
    node.start()
    try:
        ae = AE("SCU")
        ae.add_requested_context(CT)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="MVI_NODE")
        statuses = [assoc.send_c_store(dcmread(f)) for f in files]
        assoc.release()
        assert [s.Status for s in statuses] == [0, 0, 0]
        assert len(decoded) == 3 and all(d is not None for d in decoded)
        assert len(encoded) == 3 and all(e is not None for e in encoded)
        staged = {dcmread(p).SOPInstanceUID: p for p in (tmp_path / "var" / "staging").rglob("*.dcm")}
        for f in files:
            src = dcmread(f)
            got = dcmread(staged[src.SOPInstanceUID])
            assert got.file_meta.MediaStorageSOPClassUID == CT and got.PixelData == src.PixelData
    finally:
        node.stop()
