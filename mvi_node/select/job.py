"""The exam(s) a staged study belongs to, for the study job.

Reads the staged study (``<staging>/<StudyInstanceUID>/<SeriesInstanceUID>/*.dcm``,
headers only) together with the staged studies of the same exam: some sites send one
StudyInstanceUID per phase. Those are found by reading one header per sibling study
(PatientID and AccessionNumber or FrameOfReferenceUID), not all of them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from pydicom import dcmread

from mvi_node.select.engine import select_datasets
from mvi_node.select.rules import load_rules
from mvi_node.select.series import read_headers

log = logging.getLogger(__name__)

# Only sibling studies staged within this many seconds of the job's study are read.
RELATED_WINDOW_S = 2 * 86400


_KEYS = ["PatientID", "AccessionNumber", "FrameOfReferenceUID"]


def _first_header(study_dir: Path):
    for series_dir in sorted(p for p in study_dir.iterdir() if p.is_dir()):
        for f in sorted(series_dir.glob("*.dcm")):
            try:
                return dcmread(f, stop_before_pixels=True, specific_tags=_KEYS)
            except Exception:  # noqa: BLE001 - an unreadable sibling is simply not related
                continue
    return None


def related_studies(staging_dir: Path, study_uid: str, headers) -> list[Path]:
    """Sibling staged studies of the same patient sharing accession or frame of reference."""
    me = staging_dir / study_uid
    patient = {str(ds.get("PatientID", "")) for ds in headers}
    keys = {("acc", str(ds.get("AccessionNumber", "") or "")) for ds in headers} | {
        ("for", str(ds.get("FrameOfReferenceUID", "") or "")) for ds in headers
    }
    keys = {k for k in keys if k[1]}
    try:
        mine = me.stat().st_mtime
        siblings = [
            p for p in staging_dir.iterdir() if p.is_dir() and p.name != study_uid and not p.name.startswith(".")
        ]
    except OSError:
        return []
    out = []
    for sib in sorted(siblings):
        try:
            if abs(sib.stat().st_mtime - mine) > RELATED_WINDOW_S:
                continue
        except OSError:
            continue
        ds = _first_header(sib)
        if ds is None or str(ds.get("PatientID", "")) not in patient:
            continue
        theirs = {
            ("acc", str(ds.get("AccessionNumber", "") or "")),
            ("for", str(ds.get("FrameOfReferenceUID", "") or "")),
        }
        if keys & theirs:
            out.append(sib)
    return out


def staged_exams(staging_dir: Path, study_uid: str, rules_file: str | Path | None = None):
    """The selected exam(s) holding ``study_uid`` and the rule set used."""
    staging_dir = Path(staging_dir)
    headers = [ds for _p, ds in read_headers(staging_dir / study_uid)]
    for sib in related_studies(staging_dir, study_uid, headers):
        headers += [ds for _p, ds in read_headers(sib)]
    rules = load_rules(rules_file)
    return [e for e in select_datasets(headers, rules) if study_uid in e.study_uids], rules
