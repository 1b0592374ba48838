"""Strict structural check of an encoded dataset, before anything is acknowledged.

Every element header is read and every value must be present: a dataset that ends one
byte early, inside a value of any size or inside an element header, is refused. Values
are skipped (seeked over, or for a deflated dataset inflated and thrown away), never
held: memory does not grow with the instance, and only the four UIDs the node files an
instance under are decoded. What the check insists on (PS3.5 §7):

- explicit VR: a known VR; the fixed-size binary VRs (US, UL, FD, AT, OW, ...) have a
  length that is a multiple of their size; the UIDs the node files under are UI (or
  UN, which readers decode with the dictionary's VR; a UN sequence is walked as one);
- elements in strictly ascending tag order at each level (so no element, a UID least of
  all, occurs twice), and no command (0000) or file-meta (0002) elements;
- undefined length only on sequences, UN (an implicit-VR sequence, §6.2.2) and
  encapsulated pixel data; items and delimiters where they belong; at most
  ``MAX_DEPTH`` nested sequences;
- a deflated dataset inflates completely and to at most ``max_inflated`` bytes; at
  most 8 bytes follow the deflate stream (a pad byte, or a CRC-32 and size trailer).

The readers share one interface (``read(n)``, ``skip(n)``, ``pos``) so the same walk runs
over bytes in memory, a received file, or a deflate stream inflated on the fly.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQ_END = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
MAX_DEPTH = 32

#: explicit VRs with a 2-byte reserved field and a 4-byte length
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_SHORT_VRS = frozenset({b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT",
                        b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"})
#: value length must be a multiple of this
_UNIT = {b"AT": 4, b"FL": 4, b"FD": 8, b"SL": 4, b"SS": 2, b"UL": 4, b"US": 2, b"SV": 8, b"UV": 8,
         b"OD": 8, b"OF": 4, b"OL": 4, b"OV": 8, b"OW": 2}


class DatasetError(ValueError):
    """The dataset is not whole or not well formed; ``code`` is a short fixed label."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class InflateLimit(DatasetError):
    pass


def _truncated(what: str) -> DatasetError:
    return DatasetError("truncated", f"dataset is truncated ({what})")


class BytesReader:
    def __init__(self, data: bytes | memoryview) -> None:
        self._data = memoryview(data)
        self.pos = 0

    def read(self, n: int) -> bytes:
        out = bytes(self._data[self.pos:self.pos + n])
        self.pos += len(out)
        return out

    def skip(self, n: int) -> int:
        step = min(n, len(self._data) - self.pos)
        self.pos += step
        return step


class FileReader:
    """Forward reads of ``length`` bytes of an open file from its current offset."""

    def __init__(self, fh: BinaryIO, length: int) -> None:
        self._fh = fh
        self._left = length
        self.pos = 0

    def read(self, n: int) -> bytes:
        out = self._fh.read(min(n, self._left))
        self._left -= len(out)
        self.pos += len(out)
        return out

    def skip(self, n: int) -> int:
        step = min(n, self._left)
        self._fh.seek(step, 1)
        self._left -= step
        self.pos += step
        return step


class InflatingReader:
    """Raw deflate (PS3.5 §A.5) read through ``source``, inflated in bounded steps."""

    CHUNK = 1 << 16

    def __init__(self, source, max_inflated: int) -> None:
        self._src = source
        self._z = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buf = b""
        self._off = 0
        self._pending = b""  # compressed input not yet consumed
        self.max_inflated = max_inflated
        self.inflated = 0
        self.pos = 0

    def _fill(self, want: int) -> None:
        while len(self._buf) - self._off < want and not self._z.eof:
            if not self._pending:
                self._pending = self._src.read(self.CHUNK)
                if not self._pending:
                    break
            try:
                out = self._z.decompress(self._pending, self.CHUNK)
            except zlib.error as exc:
                raise DatasetError("undecodable", f"deflated dataset does not inflate: {exc}") from None
            self._pending = b"" if self._z.eof else self._z.unconsumed_tail
            self.inflated += len(out)
            if self.inflated > self.max_inflated:
                raise InflateLimit(
                    "inflate_limit",
                    f"deflated dataset inflates beyond {self.max_inflated >> 20} MiB (max_inflated_mb)",
                )
            self._buf = self._buf[self._off:] + out
            self._off = 0

    def read(self, n: int) -> bytes:
        self._fill(n)
        out = self._buf[self._off:self._off + n]
        self._off += len(out)
        self.pos += len(out)
        return out

    def skip(self, n: int) -> int:
        done = 0
        while done < n:
            step = min(n - done, self.CHUNK)
            got = len(self.read(step))
            done += got
            if got < step:
                break
        return done

    def finish(self) -> None:
        """The deflate stream must end, and nothing may follow it."""
        self._fill(1)
        if len(self._buf) > self._off:
            raise DatasetError("malformed", "data after the end of the dataset")
        if not self._z.eof:
            raise _truncated("deflate stream ends early")
        # after the stream: a NUL pad byte (odd length), or the CRC-32 and size some
        # writers append (a gzip trailer, 8 bytes); readers stop at the stream's end
        if len(self._z.unused_data + self._src.read(9)) > 8:
            raise DatasetError("undecodable", "data after the end of the deflate stream")


def _u16(b: bytes) -> int:
    return b[0] | b[1] << 8


def _u32(b: bytes) -> int:
    return struct.unpack("<I", b)[0]


class _Walker:
    def __init__(self, reader, implicit: bool, wanted: dict[int, int]) -> None:
        self.r = reader
        self.implicit = implicit
        self.wanted = wanted  # tag -> max length to capture
        self.found: dict[int, bytes] = {}
        self.elements = 0
        from pydicom.datadict import dictionary_VR

        self._dictionary_vr = dictionary_VR

    def _need(self, n: int, what: str) -> bytes:
        b = self.r.read(n)
        if len(b) < n:
            raise _truncated(what)
        return b

    def _skip(self, n: int, what: str) -> None:
        if self.r.skip(n) < n:
            raise _truncated(what)

    def _dict_is_sq(self, tag: int) -> bool:
        try:
            return self._dictionary_vr(tag) == "SQ"
        except KeyError:
            return False

    # A dataset (top level, or an item's content). ``end``: absolute position where a
    # defined-length item ends; None: runs to the item delimiter (undefined length) or,
    # at top level, to the end of the stream.
    def dataset(self, end: int | None, depth: int, top: bool, implicit: bool) -> None:
        last = -1
        while True:
            if end is not None and self.r.pos >= end:
                if self.r.pos > end:
                    raise DatasetError("malformed", "an element runs past the end of its item")
                return
            head = self.r.read(4)
            if not head:
                if top:
                    return
                raise _truncated("inside an item")
            if len(head) < 4:
                raise _truncated("inside an element header")
            tag = _u16(head) << 16 | _u16(head[2:])
            if tag == ITEM_END:
                if top or end is not None:
                    raise DatasetError("malformed", "item delimiter outside an undefined-length item")
                if _u32(self._need(4, "inside an item delimiter")) != 0:
                    raise DatasetError("malformed", "item delimiter with a non-zero length")
                return
            if tag >> 16 == 0xFFFE:
                raise DatasetError("malformed", "item or sequence delimiter where an element belongs")
            if tag <= last:
                raise DatasetError("malformed", "elements out of order or repeated")
            last = tag
            if tag >> 16 in (0x0000, 0x0002) and top:
                raise DatasetError("malformed", "command or file meta elements inside the dataset")
            self.element(tag, depth, implicit)

    def element(self, tag: int, depth: int, implicit: bool) -> None:
        self.elements += 1
        if implicit:
            vr = None
            length = _u32(self._need(4, "inside an element header"))
        else:
            vr = self._need(2, "inside an element header")
            if vr in _LONG_VRS:
                self._need(2, "inside an element header")
                length = _u32(self._need(4, "inside an element header"))
            elif vr in _SHORT_VRS:
                length = _u16(self._need(2, "inside an element header"))
            else:
                raise DatasetError("malformed", "unknown value representation")
        if length == UNDEFINED:
            if tag == PIXEL_DATA and not implicit and vr in (b"OB", b"OW"):
                self.fragments()
            elif vr == b"SQ" or vr == b"UN" or (implicit and (self._dict_is_sq(tag) or tag & 0x10000)):
                # UN of undefined length is a sequence in implicit VR (PS3.5 §6.2.2);
                # implicit VR: a known sequence, or a private element (odd group)
                self.sequence(None, depth + 1, implicit or vr == b"UN")
            else:
                raise DatasetError("malformed", "undefined length on an element that is not a sequence")
            return
        if vr == b"SQ" or (implicit and self._dict_is_sq(tag)):
            self.sequence(self.r.pos + length, depth + 1, implicit)
            return
        if vr == b"UN" and self._dict_is_sq(tag):
            # readers (pydicom) decode a UN whose tag is a sequence as one, in implicit VR
            self.sequence(self.r.pos + length, depth + 1, True)
            return
        if vr is not None and length % _UNIT.get(vr, 1):
            raise DatasetError("malformed", "value length does not fit its value representation")
        if depth == 0 and tag in self.wanted:
            # top level only (an evidence sequence holds other studies' UIDs); read as a
            # UID only what every reader reads as one
            if vr is not None and vr not in (b"UI", b"UN"):  # UN: read with its dictionary VR, UI
                raise DatasetError("malformed", "a UID element whose VR is not UI")
            if length <= self.wanted[tag]:
                self.found[tag] = self._need(length, "inside a value")
            else:
                self._skip(length, "inside a value")
        else:
            self._skip(length, "inside a value")

    def sequence(self, end: int | None, depth: int, implicit: bool) -> None:
        if depth > MAX_DEPTH:
            raise DatasetError("malformed", f"sequences nested deeper than {MAX_DEPTH}")
        while True:
            if end is not None and self.r.pos >= end:
                if self.r.pos > end:
                    raise DatasetError("malformed", "an item runs past the end of its sequence")
                return
            head = self._need(8, "inside a sequence")
            tag = _u16(head) << 16 | _u16(head[2:])
            length = _u32(head[4:])
            if tag == SEQ_END:
                if end is not None:
                    raise DatasetError("malformed", "sequence delimiter in a defined-length sequence")
                if length != 0:
                    raise DatasetError("malformed", "sequence delimiter with a non-zero length")
                return
            if tag != ITEM:
                raise DatasetError("malformed", "a sequence holds something other than items")
            item_end = None if length == UNDEFINED else self.r.pos + length
            if item_end is not None and end is not None and item_end > end:
                raise DatasetError("malformed", "an item runs past the end of its sequence")
            self.dataset(item_end, depth, top=False, implicit=implicit)

    def fragments(self) -> None:
        while True:
            head = self._need(8, "inside encapsulated pixel data")
            tag = _u16(head) << 16 | _u16(head[2:])
            length = _u32(head[4:])
            if tag == SEQ_END:
                if length != 0:
                    raise DatasetError("malformed", "sequence delimiter with a non-zero length")
                return
            if tag != ITEM or length == UNDEFINED:
                raise DatasetError("malformed", "encapsulated pixel data holds something other than fragments")
            self._skip(length, "inside a pixel data fragment")


def walk(reader, implicit: bool, wanted: dict[int, int]) -> dict[int, bytes]:
    """Walk a whole dataset from ``reader``; return the raw values of ``wanted`` tags
    (tag -> the longest value captured). Raises :class:`DatasetError`."""
    w = _Walker(reader, implicit, wanted)
    w.dataset(None, 0, top=True, implicit=implicit)
    if w.elements == 0:
        raise DatasetError("empty", "the dataset is empty")
    if isinstance(reader, InflatingReader):
        reader.finish()
    return w.found
