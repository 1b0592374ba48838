"""Study queries that never hit a PACS's result cap, and the request's other filters.

Many PACS answer a C-FIND with at most N matches (500 is common) and say nothing of the
rest (Orthanc ends such an answer with 0xFE00). A date range is therefore queried in
windows; a window whose answer count reaches the cap, or that the archive ended early,
is split in two and asked again, down to single days (a single day that still
reaches the cap is reported in the replay's notes: its studies may be incomplete).
"""

from __future__ import annotations

import datetime as dt
from typing import Callable, Iterable

from pydicom.dataset import Dataset

from mvi_node.replay.request import ReplayRequest, parse_date, pattern

#: (date range "YYYYMMDD-YYYYMMDD" or "", modality or "", accession or "", patient ID or "") -> answers
FindStudies = Callable[[str, str, str, str], list[Dataset]]


def _da(d: dt.date) -> str:
    return d.strftime("%Y%m%d")


def windowed(find: FindStudies, start: dt.date, end: dt.date, cap: int, notes: list[str],
             modality: str = "", accession: str = "", patient_id: str = "") -> list[Dataset]:
    """Every study from ``start`` to ``end`` (inclusive), splitting windows at the cap."""
    answers = find(f"{_da(start)}-{_da(end)}", modality, accession, patient_id)
    # the configured cap, or the archive saying it stopped early (a lower cap than configured)
    if len(answers) < cap and not getattr(answers, "truncated", False):
        return answers
    if start == end:
        notes.append(f"{_da(start)}: the archive answered {len(answers)} studies, its cap; some may be missing")
        return answers
    middle = start + (end - start) // 2
    return (windowed(find, start, middle, cap, notes, modality, accession, patient_id)
            + windowed(find, middle + dt.timedelta(days=1), end, cap, notes, modality, accession, patient_id))


def _modalities(ds: Dataset) -> set[str]:
    value = ds.get("ModalitiesInStudy")
    if value is None or value == "":
        return set()
    return {str(v) for v in (value if type(value).__name__ in ("MultiValue", "list") else [value])}


def find_studies(find: FindStudies, request: ReplayRequest, cap: int, notes: list[str],
                 today: dt.date | None = None) -> list[Dataset]:
    """The studies a request names, deduplicated, filtered, oldest first, at most ``limit``."""
    modalities = request.modality or [""]
    keys: list[tuple[str, str]] = [(a, "") for a in request.accessions] or [("", request.patient_id or "")]
    start = parse_date(request.date_from) if request.date_from else None
    end = parse_date(request.date_to) if request.date_to else (today or dt.date.today()) if start else None
    if start is not None and end is not None and start > end:
        notes.append("date_from is after date_to: nothing to find")
        return []
    found: dict[str, Dataset] = {}
    for modality in modalities:
        for accession, patient in keys:
            if start is not None:
                answers = windowed(find, start, end, cap, notes, modality, accession, patient)  # type: ignore[arg-type]
            else:
                answers = find("", modality, accession, patient)
                if len(answers) >= cap:
                    notes.append(f"a query without dates reached the archive's cap of {cap}: give --from/--to")
            for ds in answers:
                uid = str(ds.get("StudyInstanceUID", "") or "")
                if uid:
                    found.setdefault(uid, ds)
    studies = list(_filtered(found.values(), request))
    studies.sort(key=lambda d: (str(d.get("StudyDate", "") or ""), str(d.get("StudyTime", "") or ""),
                                str(d.StudyInstanceUID)))
    return studies[: request.limit] if request.limit else studies


def _filtered(studies: Iterable[Dataset], request: ReplayRequest) -> Iterable[Dataset]:
    # Archives differ in what they match (ModalitiesInStudy, wildcards): checked again here.
    study_re = pattern(request.study_description)
    wanted = set(request.modality)
    for ds in studies:
        mods = _modalities(ds)
        if wanted and mods and not (mods & wanted):
            continue
        if study_re is not None and not study_re.search(str(ds.get("StudyDescription", "") or "")):
            continue
        if request.accessions and str(ds.get("AccessionNumber", "") or "") not in request.accessions:
            continue
        if request.patient_id and str(ds.get("PatientID", "") or "") != request.patient_id:
            continue
        yield ds
