"""Bring the index back in line with the staging folder after a crash.

A crash can leave (a) temporary files from writes that were never acknowledged, and
(b) staged files whose index row was not committed (written and renamed, then killed
before the acknowledgement). (a) are deleted; (b) are indexed, so a resend counts as a
duplicate and nothing the sender may believe stored goes missing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread

from mvi_node.stage.index import InstanceRecord, StagingIndex
from mvi_node.stage.paths import TMP_PREFIX, InvalidUID, check_uid

log = logging.getLogger("mvi_node.stage")


@dataclass
class ReconcileReport:
    temporary_removed: int = 0
    reindexed: int = 0
    unreadable: int = 0


def reconcile(staging_dir: Path, index: StagingIndex) -> ReconcileReport:
    report = ReconcileReport()
    if not staging_dir.is_dir():
        return report
    for dirpath, _dirnames, filenames in os.walk(staging_dir):
        for name in filenames:
            path = Path(dirpath) / name
            if name.startswith(TMP_PREFIX):
                path.unlink(missing_ok=True)
                report.temporary_removed += 1
                continue
            if not name.endswith(".dcm") or index.contains(name[:-4]):
                continue
            try:
                ds = dcmread(path, stop_before_pixels=True)
                rec = InstanceRecord(
                    sop_instance_uid=check_uid(ds.SOPInstanceUID, "SOPInstanceUID"),
                    study_uid=check_uid(ds.StudyInstanceUID, "StudyInstanceUID"),
                    series_uid=check_uid(ds.SeriesInstanceUID, "SeriesInstanceUID"),
                    sop_class_uid=check_uid(ds.SOPClassUID, "SOPClassUID"),
                    transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
                    size=path.stat().st_size,
                )
            except (InvalidUID, AttributeError, OSError, ValueError) as exc:
                log.warning("staged file %s is unreadable (%s); left in place", path.name, type(exc).__name__)
                report.unreadable += 1
                continue
            index.add(rec, now=path.stat().st_mtime)
            report.reindexed += 1
    if report.temporary_removed or report.reindexed:
        log.info(
            "reconciled staging: %d temporary files removed, %d files re-indexed",
            report.temporary_removed,
            report.reindexed,
        )
    return report
