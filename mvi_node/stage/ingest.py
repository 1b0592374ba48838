"""Turn one received encoded dataset into a durable, indexed staged instance.

Kept apart from the network code so every front door (the DICOM listener, the
Orthanc hand-off, replay) stages through the same checks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from mvi_node.common.durable import FileRange, ensure_dir, move_durably, write_durably
from mvi_node.stage.dataset_check import BytesReader, DatasetError, FileReader, InflatingReader, walk
from mvi_node.stage.index import InstanceRecord, StagingIndex
from mvi_node.stage.paths import InvalidUID, check_uid, instance_path

log = logging.getLogger("mvi_node.stage")

#: default cap on what a deflated dataset may inflate to ([listener] max_inflated_mb)
DEFAULT_MAX_INFLATED = 1024 << 20


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
STATUS_TOO_LARGE = 0xC002  # larger than the node's configured maximum: resending cannot help
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122  # PS3.7 C.4: the command's class is not the context's


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
#: a UID value longer than this is not captured (and then reported invalid)
_UID_CAPTURE = 128


def _reader_for(source, transfer_syntax: str, max_inflated: int):
    ts = UID(transfer_syntax)
    if ts == ExplicitVRBigEndian:
        raise RejectedInstance(STATUS_CANNOT_UNDERSTAND, "big endian transfer syntax is not supported", "undecodable")
    reader = BytesReader(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    if ts == DeflatedExplicitVRLittleEndian:
        reader = InflatingReader(reader, max_inflated)
    return reader, ts == ImplicitVRLittleEndian


def parse_header(source, transfer_syntax: str, max_inflated: int = DEFAULT_MAX_INFLATED) -> ParsedHeader:
    """Check that ``source`` (a dataset without file meta: bytes, or a reader of
    :mod:`mvi_node.stage.dataset_check`) is whole and well formed; return its UIDs.

    Every element header is walked, so a truncated or malformed dataset is refused
    before anything is acknowledged; values are skipped, not held, and only the four
    UIDs are decoded (this runs once per received instance).
    """
    reader, implicit = _reader_for(source, transfer_syntax, max_inflated)
    try:
        found = walk(reader, implicit, {tag: _UID_CAPTURE for tag in _WANTED})
    except DatasetError as exc:
        if exc.code in ("truncated", "empty"):
            raise RejectedInstance(STATUS_CANNOT_UNDERSTAND, exc.reason, exc.code) from None
        if exc.code == "inflate_limit":
            raise RejectedInstance(STATUS_TOO_LARGE, exc.reason, exc.code) from None
        raise RejectedInstance(STATUS_CANNOT_UNDERSTAND, f"dataset cannot be parsed: {exc.reason}", "undecodable") from None
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
    """Stage encoded datasets under ``staging_dir`` and index them.

    ``sync`` false: files are renamed into place unsynced and ``syncer`` (a
    :class:`mvi_node.common.durable.BatchSyncer`) fsyncs them in batches.
    """

    def __init__(self, staging_dir: Path, index: StagingIndex, sync: bool = True,
                 max_inflated: int = DEFAULT_MAX_INFLATED, syncer=None) -> None:
        self.staging_dir = Path(staging_dir)
        self.index = index
        self.sync = sync
        self.syncer = syncer
        self.max_inflated = max_inflated
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
        """Make one instance held in memory durable; raises :class:`RejectedInstance`.

        ``file_meta_and_dataset`` are the chunks written to disk (preamble, file meta,
        dataset) so the stored file holds the bytes exactly as received.
        """
        header = parse_header(dataset, transfer_syntax, self.max_inflated)
        size = sum(len(c) for c in file_meta_and_dataset)
        return self._commit(header, file_meta_and_dataset, size, transfer_syntax, command_sop_class,
                            command_sop_instance, calling_ae)

    def store_file(
        self,
        file_meta: bytes,
        source: Path,
        transfer_syntax: str,
        command_sop_class: str,
        command_sop_instance: str,
        calling_ae: str | None = None,
        offset: int = 0,
    ) -> StoreOutcome:
        """Make one instance received into ``source`` (its dataset from ``offset`` on)
        durable, behind ``file_meta``; memory does not grow with the instance."""
        with open(source, "rb", buffering=1 << 16) as fh:
            length = os.fstat(fh.fileno()).st_size - offset
            fh.seek(offset)
            header = parse_header(FileReader(fh, length), transfer_syntax, self.max_inflated)
        chunks = [file_meta, FileRange(Path(source), offset, length)]
        return self._commit(header, chunks, len(file_meta) + length, transfer_syntax, command_sop_class,
                            command_sop_instance, calling_ae)

    def store_received(
        self,
        source: Path,
        meta_length: int,
        transfer_syntax: str,
        command_sop_class: str,
        command_sop_instance: str,
        calling_ae: str | None = None,
        seal: Callable[[], None] | None = None,
    ) -> StoreOutcome:
        """Stage a file received whole with the node's file meta in front of the dataset
        (``meta_length`` bytes): checked in place, then fsynced and renamed into staging
        (no copy). ``source`` must be on staging's filesystem; otherwise it is copied.

        ``seal``: makes ``source`` durable where it is, its name included (a file of a
        :class:`mvi_node.common.filepool.FilePool`); the rename into staging then needs no
        folder fsync, since a crash leaves the file sealed in the pool or staged."""
        source = Path(source)
        with open(source, "rb", buffering=1 << 16) as fh:
            total = os.fstat(fh.fileno()).st_size
            fh.seek(meta_length)
            header = parse_header(FileReader(fh, total - meta_length), transfer_syntax, self.max_inflated)

        def place(path: Path) -> None:
            try:
                if seal is not None and self.sync:
                    ensure_dir(path.parent)  # a new study's or series' folder: durable before the rename
                    seal()
                    os.replace(source, path)
                else:
                    move_durably(source, path, sync=self.sync)
            except OSError as exc:
                if exc.errno != 18:  # EXDEV: staging is another filesystem
                    raise
                write_durably(path, [FileRange(source, 0, total)], sync=self.sync)

        return self._commit(header, place, total, transfer_syntax, command_sop_class, command_sop_instance,
                            calling_ae)

    def _commit(self, header: ParsedHeader, chunks, size: int, transfer_syntax: str,
                command_sop_class: str, command_sop_instance: str, calling_ae: str | None) -> StoreOutcome:
        """``chunks``: what to write at the staged path, or a callable that puts it there."""
        if header.sop_instance_uid != str(command_sop_instance).rstrip("\x00 "):
            raise RejectedInstance(STATUS_UID_MISMATCH, "SOPInstanceUID differs from the C-STORE request", "uid_mismatch")
        if header.sop_class_uid != str(command_sop_class).rstrip("\x00 "):
            raise RejectedInstance(STATUS_DATASET_MISMATCH, "SOPClassUID differs from the C-STORE request", "sop_class_mismatch")
        record = InstanceRecord(
            sop_instance_uid=header.sop_instance_uid,
            study_uid=header.study_uid,
            series_uid=header.series_uid,
            sop_class_uid=header.sop_class_uid,
            transfer_syntax=str(transfer_syntax),
            size=size,
            calling_ae=calling_ae,
        )
        path = instance_path(self.staging_dir, header.study_uid, header.series_uid, header.sop_instance_uid)
        if self.index.contains(record.sop_instance_uid):
            # Already durable: acknowledge without rewriting, but record the resend.
            self.index.add(record)
            return StoreOutcome(path, record, duplicate=True)
        try:
            if callable(chunks):
                chunks(path)
            else:
                write_durably(path, chunks, sync=self.sync)
        except OSError as exc:
            raise RejectedInstance(
                STATUS_OUT_OF_RESOURCES, f"cannot write staged file: {os.strerror(exc.errno or 0)}", "write_error"
            ) from None
        if not self.sync and self.syncer is not None:
            self.syncer.add(path)
        is_new = self.index.add(record)
        return StoreOutcome(path, record, duplicate=not is_new)
