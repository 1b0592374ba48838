"""Turn one received encoded dataset into a durable, indexed staged instance.

Kept apart from the network code so every front door (the DICOM listener, the
Orthanc hand-off, replay) stages through the same checks.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from pydicom.errors import InvalidDicomError
from pydicom.filereader import data_element_generator
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

from mvi_node.common.durable import write_durably
from mvi_node.stage.index import InstanceRecord, StagingIndex
from mvi_node.stage.paths import InvalidUID, check_uid, instance_path

log = logging.getLogger("mvi_node.stage")

# Values above this size are skipped, not read, while the header is checked.
_DEFER = 1024


class RejectedInstance(ValueError):
    """The dataset cannot be staged; ``status`` is the DIMSE status to answer.

    ``code`` is a short fixed label (metrics, alerting); ``reason`` is the sentence
    sent back as ErrorComment and logged.
    """

    def __init__(self, status: int, reason: str, code: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.code = code


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


_WANTED = {0x00080016: "SOPClassUID", 0x00080018: "SOPInstanceUID", 0x0020000D: "StudyInstanceUID", 0x0020000E: "SeriesInstanceUID"}


def parse_header(raw: bytes, transfer_syntax: str) -> ParsedHeader:
    """Check that ``raw`` (a dataset without file meta) is whole; return its UIDs.

    Every element header is walked, so a truncated or malformed dataset is refused
    before anything is acknowledged. pydicom's raw element generator is used rather
    than a full Dataset: values above 1 KiB are skipped, not read, and only the four
    UIDs are decoded (this runs once per received instance).
    """
    ts = UID(transfer_syntax)
    data = raw
    if ts == DeflatedExplicitVRLittleEndian:
        try:
            data = zlib.decompress(raw, -zlib.MAX_WBITS)
        except zlib.error as exc:
            raise RejectedInstance(STATUS_CANNOT_UNDERSTAND, f"deflated dataset does not inflate: {exc}", "undecodable") from None
    fp = io.BytesIO(data)
    found: dict[int, bytes] = {}
    count = 0
    try:
        for elem in data_element_generator(fp, ts == ImplicitVRLittleEndian, True, defer_size=_DEFER):
            count += 1
            if elem.tag in _WANTED and isinstance(elem.value, bytes):
                found[elem.tag] = elem.value
    except (EOFError, InvalidDicomError, ValueError, KeyError, NotImplementedError, OverflowError, struct.error) as exc:
        raise RejectedInstance(STATUS_CANNOT_UNDERSTAND, f"dataset cannot be parsed: {type(exc).__name__}", "undecodable") from None
    # A deferred value is skipped by seeking: running past the end means truncation.
    if fp.tell() != len(data) or count == 0:
        raise RejectedInstance(STATUS_CANNOT_UNDERSTAND, "dataset is truncated", "truncated")
    try:
        uids = {
            name: check_uid(found[tag].decode("ascii", "replace") if tag in found else None, name)
            for tag, name in _WANTED.items()
        }
    except InvalidUID as exc:
        raise RejectedInstance(STATUS_DATASET_MISMATCH, str(exc), "invalid_uid") from None
    return ParsedHeader(
        sop_class_uid=uids["SOPClassUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        study_uid=uids["StudyInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
    )


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
            raise RejectedInstance(STATUS_UID_MISMATCH, "SOPInstanceUID differs from the C-STORE request", "uid_mismatch")
        if header.sop_class_uid != command_sop_class:
            raise RejectedInstance(STATUS_DATASET_MISMATCH, "SOPClassUID differs from the C-STORE request", "sop_class_mismatch")
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
            raise RejectedInstance(
                STATUS_OUT_OF_RESOURCES, f"cannot write staged file: {os.strerror(exc.errno or 0)}", "write_error"
            ) from None
        is_new = self.index.add(record)
        return StoreOutcome(path, record, duplicate=not is_new)
