"""Turn one received encoded dataset into a durable, indexed staged instance.

Kept apart from the network code so every front door (the DICOM listener, the
Orthanc hand-off, replay) stages through the same checks.
"""

from __future__ import annotations

import io
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

from mvi_node.stage.durable import write_durably
from mvi_node.stage.index import InstanceRecord, StagingIndex
from mvi_node.stage.paths import InvalidUID, check_uid, instance_path

log = logging.getLogger("mvi_node.stage")

# Values above this size are skipped, not read, while the header is checked.
_DEFER = 1024


class RejectedInstance(ValueError):
    """The dataset cannot be staged; ``status`` is the DIMSE status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# PS3.4 Annex B.2.3 Storage Service statuses
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DATASET_MISMATCH = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_UID_MISMATCH = 0xC001  # 0xCxxx: "cannot understand", refined by ErrorComment


@dataclass(frozen=True)
class StoreOutcome:
    path: Path
    record: InstanceRecord
    duplicate: bool


@dataclass(frozen=True)
class ParsedHeader:
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str


def parse_header(raw: bytes, transfer_syntax: str) -> ParsedHeader:
    """Check that ``raw`` (a dataset without file meta) is whole; return its UIDs.

    Every element header is walked so a truncated or malformed dataset is refused
    before anything is acknowledged; large values are skipped, not copied.
    """
    ts = UID(transfer_syntax)
    data = raw
    if ts == DeflatedExplicitVRLittleEndian:
        try:
            data = zlib.decompress(raw, -zlib.MAX_WBITS)
        except zlib.error as exc:
            raise RejectedInstance(STATUS_CANNOT_UNDERSTAND, f"deflated dataset does not inflate: {exc}") from None
    implicit = ts == ImplicitVRLittleEndian
    fp = io.BytesIO(data)
    try:
        ds = read_dataset(fp, is_implicit_VR=implicit, is_little_endian=True, defer_size=_DEFER)
    except (EOFError, InvalidDicomError, ValueError, KeyError, NotImplementedError, OverflowError) as exc:
        raise RejectedInstance(STATUS_CANNOT_UNDERSTAND, f"dataset cannot be parsed: {type(exc).__name__}") from None
    if fp.tell() != len(data) or len(ds) == 0:
        raise RejectedInstance(STATUS_CANNOT_UNDERSTAND, "dataset is truncated")
    try:
        return ParsedHeader(
            sop_class_uid=check_uid(_value(ds, 0x00080016), "SOPClassUID"),
            sop_instance_uid=check_uid(_value(ds, 0x00080018), "SOPInstanceUID"),
            study_uid=check_uid(_value(ds, 0x0020000D), "StudyInstanceUID"),
            series_uid=check_uid(_value(ds, 0x0020000E), "SeriesInstanceUID"),
        )
    except InvalidUID as exc:
        raise RejectedInstance(STATUS_DATASET_MISMATCH, str(exc)) from None


def _value(ds, tag: int) -> object:
    if tag not in ds:
        return None
    try:
        return ds[tag].value
    except Exception:  # a malformed value reads as missing: refused by check_uid
        return None


class Stager:
    """Stage encoded datasets under ``staging_dir`` and index them."""

    def __init__(self, staging_dir: Path, index: StagingIndex, sync: bool = True) -> None:
        self.staging_dir = Path(staging_dir)
        self.index = index
        self.sync = sync
        self.staging_dir.mkdir(parents=True, exist_ok=True)

    def store(
        self,
        file_meta_and_dataset: list[bytes],
        dataset: bytes,
        transfer_syntax: str,
        command_sop_class: str,
        command_sop_instance: str,
        calling_ae: str | None = None,
    ) -> StoreOutcome:
        """Make one instance durable; raises :class:`RejectedInstance` with a status.

        ``file_meta_and_dataset`` are the chunks written to disk (preamble, file meta,
        dataset) so the stored file holds the bytes exactly as received.
        """
        header = parse_header(dataset, transfer_syntax)
        if header.sop_instance_uid != command_sop_instance:
            raise RejectedInstance(STATUS_UID_MISMATCH, "SOPInstanceUID differs from the C-STORE request")
        if header.sop_class_uid != command_sop_class:
            raise RejectedInstance(STATUS_DATASET_MISMATCH, "SOPClassUID differs from the C-STORE request")
        record = InstanceRecord(
            sop_instance_uid=header.sop_instance_uid,
            study_uid=header.study_uid,
            series_uid=header.series_uid,
            sop_class_uid=header.sop_class_uid,
            transfer_syntax=str(transfer_syntax),
            size=sum(len(c) for c in file_meta_and_dataset),
            calling_ae=calling_ae,
        )
        path = instance_path(self.staging_dir, header.study_uid, header.series_uid, header.sop_instance_uid)
        if self.index.contains(record.sop_instance_uid):
            # Already durable: acknowledge without rewriting, but record the resend.
            self.index.add(record)
            return StoreOutcome(path, record, duplicate=True)
        try:
            write_durably(path, file_meta_and_dataset, sync=self.sync)
        except OSError as exc:
            raise RejectedInstance(STATUS_OUT_OF_RESOURCES, f"cannot write staged file: {os.strerror(exc.errno or 0)}") from None
        is_new = self.index.add(record)
        return StoreOutcome(path, record, duplicate=not is_new)
