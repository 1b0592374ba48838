"""C-STORE command sets decoded and encoded by hand (PS3.7 §9.3.1; Implicit VR Little Endian, PS3.7 §6.3.1).

pynetdicom turns every command set into a pydicom ``Dataset``: it decodes each C-STORE-RQ
through pydicom's reader and builds each C-STORE-RSP as a Dataset that it encodes twice
to learn the group length and once more to send. That was about a quarter of the
listener's Python time per instance (bench/RESULTS.md, py-spy). Both are a handful of
fixed elements, so :func:`store_request` reads a plain request's bytes and
:func:`store_response` writes a response's. Whatever they do not cover (an element they
do not know, a repeated one, a value that is not plain ASCII) returns ``None`` and
pynetdicom handles the message as before; tests compare both with pynetdicom's.
"""

from __future__ import annotations

import struct

from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pynetdicom.dimse_primitives import C_STORE

#: CommandField of a C-STORE-RSP (PS3.7 Table E.1-1)
C_STORE_RSP = 0x8001
#: CommandDataSetType "no data set" (PS3.7 Table E.1-1)
NO_DATASET = 0x0101

_HEADER = struct.Struct("<HHI")  # group, element, value length (implicit VR)
_US = struct.Struct("<H")
_UL = struct.Struct("<I")


def _element(element: int, value: bytes) -> bytes:
    return _HEADER.pack(0x0000, element, len(value)) + value


def _text(value: object, pad: bytes) -> bytes | None:
    """An ASCII value padded to even length, or None (pynetdicom's encoder decides)."""
    try:
        raw = str(value).encode("ascii")
    except UnicodeEncodeError:
        return None
    return raw + pad if len(raw) % 2 else raw


def store_response(rsp: C_STORE) -> bytes | None:
    """The encoded command set of C-STORE response ``rsp``, elements in tag order, or None
    where this encoder does not cover it."""
    if rsp.MessageIDBeingRespondedTo is None or rsp.Status is None:
        return None  # a request (pynetdicom's service class also sets a response's MessageID: not encoded)
    parts: list[bytes] = []
    if rsp.AffectedSOPClassUID:
        if (v := _text(rsp.AffectedSOPClassUID, b"\0")) is None:
            return None
        parts.append(_element(0x0002, v))
    parts.append(_element(0x0100, _US.pack(C_STORE_RSP)))
    parts.append(_element(0x0120, _US.pack(int(rsp.MessageIDBeingRespondedTo))))
    parts.append(_element(0x0800, _US.pack(NO_DATASET)))
    parts.append(_element(0x0900, _US.pack(int(rsp.Status))))
    if rsp.OffendingElement:
        parts.append(_element(0x0901, b"".join(struct.pack("<HH", (t := Tag(o)).group, t.element) for o in rsp.OffendingElement)))
    if rsp.ErrorComment:
        if (v := _text(rsp.ErrorComment, b" ")) is None:
            return None
        parts.append(_element(0x0902, v))
    if rsp.AffectedSOPInstanceUID:
        if (v := _text(rsp.AffectedSOPInstanceUID, b"\0")) is None:
            return None
        parts.append(_element(0x1000, v))
    body = b"".join(parts)
    return _element(0x0000, _UL.pack(len(body))) + body


#: C-STORE-RQ elements the fast decoder reads (PS3.7 §9.3.1.1), by element number of group 0000;
#: any other element, a repeated one, or a C-MOVE originator sends the request down pynetdicom's path
_RQ_US = {0x0100: "CommandField", 0x0110: "MessageID", 0x0700: "Priority", 0x0800: "CommandDataSetType"}
_RQ_UI = {0x0002: "AffectedSOPClassUID", 0x1000: "AffectedSOPInstanceUID"}
#: CommandField of a C-STORE-RQ
C_STORE_RQ = 0x0001


class StoreCommand:
    """A C-STORE-RQ's command set, decoded: the keywords pynetdicom's ``command_set`` has
    (what the node's file meta and dataset watchdog read), as plain attributes."""

    __slots__ = ("CommandGroupLength", "AffectedSOPClassUID", "CommandField", "MessageID", "Priority",
                 "CommandDataSetType", "AffectedSOPInstanceUID")

    def __init__(self, values: dict[str, object]) -> None:
        for k in self.__slots__:
            setattr(self, k, values.get(k))

    def to_dataset(self) -> Dataset:
        """The command set as pynetdicom's decoder would have left it."""
        ds = Dataset()
        for k in self.__slots__:
            if (v := getattr(self, k)) is not None:
                setattr(ds, k, v)
        return ds

    def to_primitive(self) -> C_STORE:
        """The request primitive, through pynetdicom's own setters (their validation
        raises as it would in ``message_to_primitive``)."""
        p = C_STORE()
        p.MessageID = self.MessageID
        p.AffectedSOPClassUID = self.AffectedSOPClassUID
        p.AffectedSOPInstanceUID = self.AffectedSOPInstanceUID
        p.Priority = self.Priority
        return p


def store_request(raw: bytes) -> StoreCommand | None:
    """The C-STORE-RQ in command set bytes ``raw`` that announces a dataset, or None where
    this decoder does not cover it (pynetdicom then decodes ``raw`` as before)."""
    n, at, values = len(raw), 0, {}
    while at < n:
        if at + 8 > n:
            return None
        group, element, length = _HEADER.unpack_from(raw, at)
        at += 8
        if group != 0 or length > n - at:
            return None
        value = raw[at:at + length]
        at += length
        if element == 0x0000 and length == 4:
            key, v = "CommandGroupLength", _UL.unpack(value)[0]
        elif element in _RQ_US and length == 2:
            key, v = _RQ_US[element], _US.unpack(value)[0]
        elif element in _RQ_UI and length:
            key, v = _RQ_UI[element], value.decode("latin-1").rstrip("\0 ")
            if not v or "\\" in v:
                return None
        else:
            return None
        if key in values:
            return None
        values[key] = v
    if values.get("CommandField") != C_STORE_RQ or values.get("CommandDataSetType", NO_DATASET) == NO_DATASET:
        return None
    if any(k not in values for k in ("MessageID", "Priority", "AffectedSOPClassUID", "AffectedSOPInstanceUID")):
        return None
    return StoreCommand(values)
