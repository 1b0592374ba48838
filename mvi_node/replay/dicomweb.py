"""A DICOMweb origin server as an archive: QIDO-RS to search, WADO-RS to retrieve
(PS3.18 10.6 and 10.4).

Studies and series are searched with the same attributes as the C-FIND queries; each
instance is retrieved on its own (``.../instances/{uid}``, ``multipart/related;
type="application/dicom"``), streamed to a temporary file in the node's incoming folder
(cleared at start-up) and staged from there, so memory does not grow with the instance
and the replay's budget paces instances.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Callable, Iterable

from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info

from mvi_node.common.durable import TMP_PREFIX
from mvi_node.replay.folder import StageFile, dataset_offset
from mvi_node.replay.sources import SERIES_KEYS, STUDY_KEYS, ArchiveError, Retrieved

ACCEPT = 'multipart/related; type="application/dicom"'


def _from_json(items) -> list[Dataset]:
    return [Dataset.from_json(item) for item in items or []]


class DicomWebArchive:
    def __init__(self, base_url: str, stage_file: StageFile, spool: Path, timeout_s: float = 60.0,
                 headers: dict[str, str] | None = None) -> None:
        import httpx

        self.base = base_url.rstrip("/")
        self.name = "dicomweb"
        self.stage_file = stage_file
        self.spool = Path(spool)
        self._client = httpx.Client(timeout=timeout_s, headers=headers or {})

    def __str__(self) -> str:
        return self.name

    def _get_json(self, path: str, params: dict[str, str]) -> list[Dataset]:
        import httpx

        try:
            resp = self._client.get(f"{self.base}{path}", params=params, headers={"Accept": "application/dicom+json"})
        except httpx.HTTPError as exc:
            raise ArchiveError(f"archive {self.name}: {type(exc).__name__}") from None
        if resp.status_code == 204:
            return []
        if resp.status_code >= 400:
            raise ArchiveError(f"archive {self.name}: QIDO-RS answered HTTP {resp.status_code}")
        return _from_json(resp.json())

    def find_studies(self, date_range: str = "", modality: str = "", accession: str = "",
                     patient_id: str = "") -> list[Dataset]:
        params = {"includefield": ",".join(STUDY_KEYS)}
        for key, value in (("StudyDate", date_range), ("ModalitiesInStudy", modality),
                           ("AccessionNumber", accession), ("PatientID", patient_id)):
            if value:
                params[key] = value
        return self._get_json("/studies", params)

    def find_series(self, study_uid: str) -> list[Dataset]:
        answers = self._get_json(f"/studies/{study_uid}/series", {"includefield": ",".join(SERIES_KEYS)})
        for a in answers:
            if "StudyInstanceUID" not in a:
                a.StudyInstanceUID = study_uid
        return answers

    def find_instances(self, study_uid: str, series_uid: str) -> list[str]:
        answers = self._get_json(f"/studies/{study_uid}/series/{series_uid}/instances",
                                 {"includefield": "SOPInstanceUID,InstanceNumber"})
        answers.sort(key=lambda d: (int(d.get("InstanceNumber") or 0), str(d.SOPInstanceUID)))
        return [str(d.SOPInstanceUID) for d in answers]

    def _download(self, url: str, target: Path) -> None:
        """Stream the single part of a WADO-RS answer into ``target`` (a Part 10 file)."""
        with self._client.stream("GET", url, headers={"Accept": ACCEPT}) as resp:
            if resp.status_code >= 400:
                raise ArchiveError(f"archive {self.name}: WADO-RS answered HTTP {resp.status_code}")
            ctype = resp.headers.get("content-type", "")
            boundary = next((p.split("=", 1)[1].strip('"') for p in ctype.split(";")
                             if p.strip().lower().startswith("boundary=")), None)
            if boundary is None:
                raise ArchiveError(f"archive {self.name}: WADO-RS answer is not multipart")
            head, body_started, tail = b"", False, b""
            closing = f"\r\n--{boundary}".encode()
            with open(target, "wb") as out:
                for chunk in resp.iter_bytes():
                    if not body_started:
                        head += chunk
                        end = head.find(b"\r\n\r\n")
                        if end < 0:
                            continue
                        body_started, chunk = True, head[end + 4:]
                    # hold back what may be the closing boundary
                    data = tail + chunk
                    keep = len(closing) + 8
                    out.write(data[:-keep] if len(data) > keep else b"")
                    tail = data[-keep:] if len(data) > keep else data
                cut = tail.find(closing)
                out.write(tail[:cut] if cut >= 0 else tail)

    def retrieve(self, study_uid: str, series_uid: str, sop_uids: Iterable[str] | None = None,
                 before_each: Callable[[int], None] | None = None, cancel: threading.Event | None = None,
                 chunk: int = 1) -> Retrieved:
        sops = list(sop_uids) if sop_uids is not None else self.find_instances(study_uid, series_uid)
        out = Retrieved()
        for sop in sops:
            if cancel is not None and cancel.is_set():
                out.cancelled = True
                break
            if before_each is not None:
                before_each(1)
            target = self.spool / f"{TMP_PREFIX}wado-{uuid.uuid4().hex}"
            try:
                self._download(f"{self.base}/studies/{study_uid}/series/{series_uid}/instances/{sop}", target)
                meta = read_file_meta_info(target)
                status = self.stage_file(target, dataset_offset(target), str(meta.TransferSyntaxUID),
                                         str(meta.MediaStorageSOPClassUID), sop, "")
            except (ArchiveError, OSError, ValueError) as exc:
                status = 0xA700
                out.failed_sops.append(sop)
                if isinstance(exc, ArchiveError) and not out.failed:
                    out.status = 0xB000
            finally:
                target.unlink(missing_ok=True)
            if status == 0:
                out.completed += 1
            else:
                out.failed += 1
                out.status = 0xB000
        return out
