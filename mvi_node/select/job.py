"""The exam(s) a staged study belongs to, for the study job.

Reads the staged study (``<staging>/<StudyInstanceUID>/<SeriesInstanceUID>/*.dcm``,
headers only) together with the staged studies of the same exam that the caller found
(some sites send one StudyInstanceUID per phase, and a workstation sends the tumour
outline as a study of its own): :mod:`mvi_node.pipeline.siblings` finds them through
the staging index, never by scanning every staged folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mvi_node.select.engine import select_datasets
from mvi_node.select.headers import HeaderCache
from mvi_node.select.rules import load_rules
from mvi_node.select.series import read_headers


def study_headers(staging_dir: Path, study_uid: str, cache: HeaderCache | None = None) -> list:
    """Every staged header of one study (pixel data not read); ``cache``: the headers
    the node parsed while the study arrived."""
    return [ds for _p, ds in read_headers(Path(staging_dir) / study_uid, cache)]


def staged_exams(staging_dir: Path, study_uid: str, rules_file: str | Path | None = None,
                 related: Sequence[tuple[str, str]] = (), window_seconds: float = 0.0,
                 headers: list | None = None, cache: HeaderCache | None = None):
    """The selected exam(s) holding ``study_uid`` and the rule set used. ``related``:
    (study, state) of the sibling studies to read with it; state 'open' (still being
    received) is recorded on the exam as a pending part. ``headers``: the study's own
    headers when the caller has read them already."""
    staging_dir = Path(staging_dir)
    headers = list(headers) if headers is not None else study_headers(staging_dir, study_uid, cache)
    pending = []
    for sib, state in related:
        headers += study_headers(staging_dir, sib, cache)
        if state == "open":
            pending.append(sib)
    rules = load_rules(rules_file)
    exams = [e for e in select_datasets(headers, rules, window_seconds) if study_uid in e.study_uids]
    for exam in exams:
        exam.pending_studies = sorted(set(pending) & set(exam.study_uids))
    return exams, rules
