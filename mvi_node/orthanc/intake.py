"""Studies Orthanc hands over: import jobs, and a catch-up on Orthanc's change log.

The node reads a study's instances from Orthanc into its own durable staging through
the same checks as the DICOM listener, so completion, selection and jobs are unchanged.
The plugin's hand-off is the fast path; ``/changes`` (StableStudy events, the last
sequence number kept on disk) is the safety net for hand-offs lost while the node or
Orthanc restarted. Both queue the same idempotent import job.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mvi_node.common.poller import Poller
from mvi_node.jobs.store import Job, JobStore
from mvi_node.orthanc.client import OrthancClient, OrthancError
from mvi_node.stage.ingest import STATUS_OUT_OF_RESOURCES, RejectedInstance, Stager

log = logging.getLogger("mvi_node.orthanc")

ORTHANC_IMPORT_JOB = "orthanc-import"


def import_job_key(client: OrthancClient, study_id: str) -> str:
    """One import per study version: a study that changes in Orthanc is imported again."""
    info = client.study(study_id)
    return f"orthanc-import:{study_id}:{info.get('LastUpdate', '')}"


def split_part10(data: bytes) -> tuple[bytes, bytes, str, str, str]:
    """(file-meta chunk, dataset, transfer syntax, SOP class, SOP instance) of a Part 10 file."""
    import io

    from pydicom import dcmread

    meta = dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).file_meta
    # preamble + "DICM" (132) + the group length element (12) + the group it announces
    start = 132 + 12 + int(meta.FileMetaInformationGroupLength)
    return (
        data[:start],
        data[start:],
        str(meta.TransferSyntaxUID),
        str(meta.MediaStorageSOPClassUID),
        str(meta.MediaStorageSOPInstanceUID),
    )


#: Manufacturer the report stage writes into every SR/SC (mvi_node.report.inputs)
OWN_MANUFACTURER = "mvi-node project"


def is_own_result(data: bytes) -> bool:
    """True for the node's own SR/SC: with retention > 0 they sit in the staging Orthanc's
    copy of the study, and importing them would open a second round of the study."""
    import io

    from pydicom import dcmread

    ds = dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["Manufacturer"])
    return str(ds.get("Manufacturer", "")) == OWN_MANUFACTURER


class StagingFull(RuntimeError):
    """Transient: the node's disk is below its floor or a write failed for space; the
    import job retries with back-off (Orthanc keeps the study meanwhile)."""


def import_study(client: OrthancClient, study_id: str, stager: Stager, disk=None) -> dict[str, int]:
    """Copy every instance of an Orthanc study into the node's staging (idempotent).
    ``disk`` (a :class:`~mvi_node.receive.policy.DiskGuard`): below its floor nothing is
    taken, as at the DICOM listener."""
    counts = {"staged": 0, "duplicates": 0, "refused": 0, "own_results": 0}

    def check_disk() -> None:
        if disk is not None and disk.low():
            raise StagingFull("free disk below the node's floor: import paused, retried later")

    check_disk()
    for instance_id in client.study_instances(study_id):
        check_disk()
        data = client.instance_file(instance_id)
        if is_own_result(data):
            counts["own_results"] += 1
            continue
        meta, dataset, ts, sop_class, sop_uid = split_part10(data)
        try:
            outcome = stager.store([meta, dataset], dataset, ts, sop_class, sop_uid, calling_ae="ORTHANC")
        except RejectedInstance as exc:
            if exc.status == STATUS_OUT_OF_RESOURCES:  # ENOSPC and other write failures pass
                raise StagingFull(f"staging write failed ({exc.code}): retried later") from None
            counts["refused"] += 1
            log.warning("Orthanc instance %s refused: %s", instance_id, exc.reason)
            continue
        counts["duplicates" if outcome.duplicate else "staged"] += 1
    return counts


def make_import_handler(client: OrthancClient, stager: Stager, disk=None):
    def handle(job: Job) -> dict[str, Any]:
        study_id = job.payload["orthanc_study_id"]
        try:
            counts = import_study(client, study_id, stager, disk)
        except OrthancError as exc:
            if exc.status == 404:  # deleted since (retention after results went out)
                return {"orthanc_study_id": study_id, "skipped": "study no longer in Orthanc"}
            raise
        log.info("Orthanc study %s imported: %s", study_id, counts)
        return {"orthanc_study_id": study_id, **counts}

    return handle


class ChangesCatchUp(Poller):
    thread_name = "orthanc-changes"
    join_timeout = 10.0
    failure_message = "Orthanc change-log pass failed"
    logger = log

    def __init__(self, client: OrthancClient, jobs: JobStore, seq_file: Path, poll_seconds: float,
                 also_each_poll=None) -> None:
        super().__init__(poll_seconds)
        self.client, self.jobs, self.seq_file = client, jobs, Path(seq_file)
        #: housekeeping on the same clock (the retention sweep), so one thread talks to Orthanc
        self.also_each_poll = also_each_poll

    def _since(self) -> int:
        try:
            return int(self.seq_file.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def run_once(self) -> int:
        since, queued = self._since(), 0
        while True:
            page = self.client.changes(since)
            for change in page.get("Changes", []):
                if change.get("ChangeType") == "StableStudy":
                    try:
                        key = import_job_key(self.client, change["ID"])
                    except OrthancError as exc:
                        if exc.status == 404:
                            continue  # deleted since: nothing to import
                        raise  # Orthanc went away: keep the sequence number, read this page again
                    self.jobs.enqueue(ORTHANC_IMPORT_JOB, key, {"orthanc_study_id": change["ID"]})
                    queued += 1
            since = int(page.get("Last", since))
            self.seq_file.write_text(str(since))
            if page.get("Done", True):
                return queued

    def poll(self) -> bool:
        self.run_once()
        if self.also_each_poll is not None:
            self.also_each_poll()
        return False

    def pass_failed(self, exc: Exception) -> None:
        if isinstance(exc, OrthancError):
            log.warning("Orthanc change log not readable: %s", exc)
        else:
            super().pass_failed(exc)

    def first_pass(self) -> bool:
        try:
            self.run_once()
        except OrthancError as exc:
            log.warning("Orthanc change log not readable at start: %s", exc)
        return True
