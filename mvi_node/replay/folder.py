"""A folder (a DICOMDIR export or a plain tree) as an archive.

The same questions as a PACS (studies, series, instances) are answered from the files'
headers, which are complete here: the plan runs the node's selection on every header,
not on a C-FIND summary. A "retrieve" stages the series' files through the node's
stager, as received instances are (the bytes as they are on disk, behind the node's
file meta). DICOMDIR itself is never read as a series (``read_headers`` skips it).
"""

from __future__ import annotations

import struct
import threading
from pathlib import Path
from typing import Callable, Iterable

from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian

from mvi_node.replay.sources import SERIES_KEYS, STUDY_KEYS, Retrieved
from mvi_node.select.series import read_headers

#: (path, dataset offset, transfer syntax, SOP class, SOP instance, source AE) -> DIMSE status
StageFile = Callable[[Path, int, str, str, str, str], int]


def dataset_offset(path: Path) -> int:
    """Where the dataset starts: after the preamble and the file meta group, or at 0
    for a raw dataset without either (older exports)."""
    with open(path, "rb") as fh:
        head = fh.read(144)
    if head[128:132] == b"DICM":
        return 144 + struct.unpack("<I", head[140:144])[0]
    if head[:4] == b"\x02\x00\x00\x00":  # a meta group without preamble
        return 12 + struct.unpack("<I", head[8:12])[0]
    return 0


def _in_range(date: str, date_range: str) -> bool:
    if not date_range:
        return True
    start, _, end = date_range.partition("-")
    return (not start or date >= start) and (not end or date <= end)


class FolderArchive:
    def __init__(self, root: Path, stage_file: StageFile) -> None:
        self.root = Path(root)
        self.name = "folder"
        self.stage_file = stage_file
        self._studies: dict[str, dict[str, list[tuple[Path, Dataset]]]] | None = None
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return self.name

    def _scan(self) -> dict[str, dict[str, list[tuple[Path, Dataset]]]]:
        with self._lock:
            if self._studies is None:
                studies: dict[str, dict[str, list[tuple[Path, Dataset]]]] = {}
                for path, ds in read_headers(self.root):
                    study = str(ds.get("StudyInstanceUID", "") or "")
                    if study:
                        studies.setdefault(study, {}).setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
                self._studies = studies
            return self._studies

    def find_studies(self, date_range: str = "", modality: str = "", accession: str = "",
                     patient_id: str = "") -> list[Dataset]:
        out = []
        for uid, series in self._scan().items():
            first = next(iter(series.values()))[0][1]
            answer = Dataset()
            for kw in STUDY_KEYS:
                if kw in first:
                    setattr(answer, kw, first.get(kw))
            answer.StudyInstanceUID = uid
            mods = sorted({str(items[0][1].get("Modality", "") or "") for items in series.values()} - {""})
            answer.ModalitiesInStudy = mods
            answer.NumberOfStudyRelatedInstances = sum(len(v) for v in series.values())
            if not _in_range(str(first.get("StudyDate", "") or ""), date_range):
                continue
            if modality and modality not in mods:
                continue
            if accession and str(first.get("AccessionNumber", "") or "") != accession:
                continue
            if patient_id and str(first.get("PatientID", "") or "") != patient_id:
                continue
            out.append(answer)
        return out

    def find_series(self, study_uid: str) -> list[Dataset]:
        out = []
        for uid, items in self._scan().get(study_uid, {}).items():
            answer = Dataset()
            for kw in SERIES_KEYS:
                if kw in items[0][1]:
                    setattr(answer, kw, items[0][1].get(kw))
            answer.NumberOfSeriesRelatedInstances = len(items)
            out.append(answer)
        return out

    def headers(self, study_uid: str) -> list[Dataset]:
        """Every header of the study: the plan's selection runs on these."""
        return [ds for items in self._scan().get(study_uid, {}).values() for _p, ds in items]

    def find_instances(self, study_uid: str, series_uid: str) -> list[str]:
        return [str(ds.SOPInstanceUID) for _p, ds in self._scan().get(study_uid, {}).get(series_uid, [])]

    def retrieve(self, study_uid: str, series_uid: str, sop_uids: Iterable[str] | None = None,
                 before_each: Callable[[int], None] | None = None, cancel: threading.Event | None = None,
                 chunk: int = 1) -> Retrieved:
        wanted = set(sop_uids) if sop_uids is not None else None
        out = Retrieved()
        for path, ds in self._scan().get(study_uid, {}).get(series_uid, []):
            sop = str(ds.SOPInstanceUID)
            if wanted is not None and sop not in wanted:
                continue
            if cancel is not None and cancel.is_set():
                out.cancelled = True
                break
            if before_each is not None:
                before_each(1)
            meta = getattr(ds, "file_meta", None)
            ts = str(getattr(meta, "TransferSyntaxUID", "") or ImplicitVRLittleEndian)
            sop_class = str(ds.get("SOPClassUID", "") or getattr(meta, "MediaStorageSOPClassUID", ""))
            status = self.stage_file(path, dataset_offset(path), ts, sop_class, sop, "")
            if status == 0:
                out.completed += 1
            else:
                out.failed += 1
                out.status = 0xB000
                out.failed_sops.append(sop)
        return out
