"""The other staged studies of a study's exam, found through the staging index.

Candidates are the studies received within :data:`RELATED_WINDOW_S` of the job's study
(an index query, never a scan of every staged folder). Each candidate's keys (patient
and accession as digests, frame of reference, study time) are read from one of its
headers the first time they are needed and kept in the index.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydicom import dcmread

from mvi_node.select.engine import study_time
from mvi_node.stage.index import StagingIndex, StudyKeys
from mvi_node.stage.paths import instance_path

#: only studies received within this many seconds of the job's study are candidates
RELATED_WINDOW_S = 2 * 86400

_KEYS = ["PatientID", "AccessionNumber", "FrameOfReferenceUID", "StudyDate", "StudyTime"]


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32] if value else ""


def keys_of(ds) -> StudyKeys:
    """The matching keys of one header (identifiers only as digests)."""
    return StudyKeys(patient=_digest(str(ds.get("PatientID", "") or "")),
                     accession=_digest(str(ds.get("AccessionNumber", "") or "").strip()),
                     frame_of_reference=str(ds.get("FrameOfReferenceUID", "") or ""),
                     study_time=study_time(ds))


def _read_keys(staging_dir: Path, index: StagingIndex, study_uid: str) -> StudyKeys | None:
    one = index.one_instance(study_uid)
    if one is None:
        return None
    try:
        ds = dcmread(instance_path(staging_dir, study_uid, *one), stop_before_pixels=True, specific_tags=_KEYS)
    except Exception:  # noqa: BLE001 - an unreadable sibling is simply not related
        return None
    keys = keys_of(ds)
    index.set_study_keys(study_uid, keys)
    return keys


def _related(mine: list[StudyKeys], theirs: StudyKeys, window_seconds: float) -> bool:
    same = [k for k in mine if k.patient == theirs.patient]
    if not same:
        return False
    if theirs.accession and any(k.accession == theirs.accession for k in same):
        return True
    if theirs.frame_of_reference and any(k.frame_of_reference == theirs.frame_of_reference for k in same):
        return True
    return window_seconds > 0 and theirs.study_time is not None and any(
        k.study_time is not None and abs(k.study_time - theirs.study_time) <= window_seconds for k in same)


def related_studies(staging_dir: Path, index: StagingIndex, study_uid: str, headers,
                    window_seconds: float = 0.0) -> list[tuple[str, str]]:
    """(study, state) of the staged sibling studies of the same patient sharing an
    accession or frame of reference (or, with ``window_seconds``, a study time close
    enough); state 'open' means it is still being received."""
    last = index.last_received(study_uid)
    if last is None:
        return []
    mine = list({keys_of(ds) for ds in headers})
    out = []
    for sib in index.received_between(last - RELATED_WINDOW_S, last + RELATED_WINDOW_S):
        if sib.study_uid == study_uid:
            continue
        keys = sib.keys or _read_keys(staging_dir, index, sib.study_uid)
        if keys is not None and _related(mine, keys, window_seconds):
            out.append((sib.study_uid, sib.state))
    return out
