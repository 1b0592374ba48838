"""Bring the index back in line with the staging folder after a crash.

A crash can leave (a) temporary files from writes that were never acknowledged (in
``staging/`` and in the listener's ``incoming/``), and (b) staged files whose index row
was not committed (written and renamed, then killed before the acknowledgement). (a)
are deleted; (b) are indexed, so a resend counts as a duplicate and nothing the sender
may believe stored goes missing. A staged file that cannot be read (c) is moved to
``quarantine/`` (same relative path), logged and counted, and start-up goes on. A
sealed file of the listener's receive pool (d) was acknowledged and its rename into
staging may not have reached the disk (:mod:`mvi_node.common.filepool`): it is staged
now; an unsealed pool file was never acknowledged and is removed.

Bounded by the index, not by the size of the archive: only study folders the index does
not know, studies whose round is open, and studies that received an instance within
:data:`RECENT_MARGIN_S` of the newest one indexed are walked. A file renamed into an older
study just before a crash (never acknowledged, so its sender resends it) is the one case
this leaves to the resend.

Only the process that holds the data folder's lock may run this: it deletes files a
live node could be writing.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.filereader import read_file_meta_info

from mvi_node.common.filepool import POOL_PREFIX, is_sealed
from mvi_node.logs import shown
from mvi_node.stage.index import InstanceRecord, StagingIndex
from mvi_node.stage.ingest import RejectedInstance, Stager
from mvi_node.stage.paths import TMP_PREFIX, check_uid

log = logging.getLogger("mvi_node.stage")

#: the index counter (and metric mvi_staged_files_quarantined_total) of (c)
QUARANTINED = "quarantined"
#: studies that received an instance this close to the newest indexed one are walked:
#: a file renamed into staging is indexed within milliseconds, or within the SQLite busy
#: wait (60 s) under contention, so older studies cannot hold an unindexed file
RECENT_MARGIN_S = 300.0


@dataclass
class ReconcileReport:
    temporary_removed: int = 0
    reindexed: int = 0
    unreadable: int = 0
    #: open rounds whose quiet period restarts at start-up
    reopened: int = 0
    #: study folders walked (the others were known to the index and quiet)
    studies_scanned: int = 0
    #: acknowledged instances found sealed in the receive pool and staged (d)
    recovered: int = 0


def _clear_incoming(folder: Path | None, staging_dir: Path, index: StagingIndex, report: ReconcileReport) -> None:
    """Stage the sealed pool files of ``incoming/`` (d); remove everything else in it (a)."""
    if folder is None or not folder.is_dir():
        return
    for path in folder.iterdir():
        if not (path.is_file() or path.is_symlink()):
            continue
        if path.name.startswith(POOL_PREFIX) and not path.is_symlink() and is_sealed(path):
            try:
                _stage_sealed(path, staging_dir, index)
            except (RejectedInstance, ValueError, OSError) as exc:
                log.error("sealed receive file %s could not be staged (%s); removed",
                          shown(path.name, 80), type(exc).__name__)
            else:
                path.unlink(missing_ok=True)  # still here when the instance was staged before (a duplicate)
                report.recovered += 1
                continue
        # an empty pool file is a spare, not a write that was cut short: not counted
        spare = path.name.startswith(POOL_PREFIX) and path.lstat().st_size == 0
        path.unlink(missing_ok=True)
        report.temporary_removed += not spare


def _stage_sealed(path: Path, staging_dir: Path, index: StagingIndex) -> None:
    """Stage a sealed pool file as the listener would have: its file meta says what it is."""
    meta = read_file_meta_info(path)
    meta_length = 132 + 12 + int(meta.FileMetaInformationGroupLength)
    Stager(staging_dir, index).store_received(
        path, meta_length, str(meta.TransferSyntaxUID), str(meta.MediaStorageSOPClassUID),
        str(meta.MediaStorageSOPInstanceUID), calling_ae=str(meta.get("SourceApplicationEntityTitle", "")) or None,
    )


def _quarantine(path: Path, staging_dir: Path, quarantine_dir: Path) -> Path:
    dest = quarantine_dir / path.relative_to(staging_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while dest.exists():
        dest = dest.with_name(f"{path.name}.{n}")
        n += 1
    shutil.move(str(path), dest)
    return dest


def reconcile(staging_dir: Path, index: StagingIndex, quarantine_dir: Path | None = None,
              incoming_dir: Path | None = None) -> ReconcileReport:
    report = ReconcileReport()
    _clear_incoming(incoming_dir, staging_dir, index, report)
    if not staging_dir.is_dir():
        return report
    quarantine_dir = quarantine_dir or staging_dir.parent / "quarantine"
    for folder in _to_walk(staging_dir, index):
        report.studies_scanned += folder != staging_dir
        _reconcile_folder(folder, staging_dir, index, quarantine_dir, report)
    # quiet periods count from start-up, not from before the crash (see restart_quiet)
    report.reopened = index.restart_quiet()
    if report.temporary_removed or report.reindexed or report.unreadable or report.recovered:
        log.info(
            "reconciled staging: %d temporary files removed, %d files re-indexed, %d quarantined, "
            "%d acknowledged instances staged from the receive pool",
            report.temporary_removed,
            report.reindexed,
            report.unreadable,
            report.recovered,
        )
    return report


def _to_walk(staging_dir: Path, index: StagingIndex) -> list[Path]:
    """Files at the top of staging, unknown study folders, and recent or open studies."""
    newest = index.newest_received()
    recent = {uid for uid, _state, _last in index.studies(newest - RECENT_MARGIN_S)} if newest is not None else set()
    known = {uid for uid, _state, _last in index.studies()} if newest is not None else set()
    out = [staging_dir]  # its own loose files only (temporary files of a crashed write)
    for entry in os.scandir(staging_dir):
        if entry.is_dir(follow_symlinks=False) and (entry.name not in known or entry.name in recent):
            out.append(Path(entry.path))
    return out


def _reconcile_folder(folder: Path, staging_dir: Path, index: StagingIndex, quarantine_dir: Path,
                      report: ReconcileReport) -> None:
    walk = os.walk(folder) if folder != staging_dir else [(str(staging_dir), [], [
        e.name for e in os.scandir(staging_dir) if e.is_file(follow_symlinks=False)])]
    for dirpath, _dirnames, filenames in walk:
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
            except Exception as exc:  # InvalidDicomError, a bad UID, a torn file: never stop start-up
                try:
                    dest = _quarantine(path, staging_dir, quarantine_dir)
                except OSError as move_error:
                    log.error("staged file %s is unreadable (%s) and could not be moved to quarantine (%s)",
                              shown(path.relative_to(staging_dir), 200), type(exc).__name__,
                              type(move_error).__name__)
                else:
                    log.warning("staged file %s is unreadable (%s); moved to %s",
                                shown(path.relative_to(staging_dir), 200), type(exc).__name__,
                                shown(dest.relative_to(quarantine_dir.parent), 220))
                report.unreadable += 1
                index.bump(QUARANTINED)
                continue
            index.add(rec, now=path.stat().st_mtime)
            report.reindexed += 1
