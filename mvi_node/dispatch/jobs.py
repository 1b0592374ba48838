"""Dispatch as durable jobs: one job per result set and destination.

A result set is written to disk (durably) before its jobs are queued, so a crash
between "report built" and "sent" loses nothing. The job key is made of the result's
deterministic SOP Instance UID and the destination, so queueing it twice (a replay, a
resumed study job) sends it once.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from mvi_node.config.destination import Destination
from mvi_node.dispatch.sender import DispatchError, send_files
from mvi_node.jobs.store import Job, JobStore
from mvi_node.jobs.worker import PermanentJobError
from mvi_node.metrics import RESULTS_FAILED, RESULTS_SENT, record_stage

log = logging.getLogger("mvi_node.dispatch")

DISPATCH_JOB = "dispatch"


def enqueue_dispatch(
    jobs: JobStore,
    files: list[Path],
    destinations: list[Destination],
    result_key: str,
    study_uid: str,
    max_attempts: int,
    completed_at: float | None = None,
) -> list[Job]:
    """Queue ``files`` for every destination; ``result_key`` identifies the result set."""
    queued = []
    for dest in destinations:
        payload = {
            "files": [str(f) for f in files],
            "destination": str(dest),
            "tls": dest.tls,
            "study_uid": study_uid,
            "completed_at": completed_at,
        }
        queued.append(jobs.enqueue(DISPATCH_JOB, f"dispatch:{result_key}:{dest}", payload, max_attempts))
    return queued


def make_dispatch_handler(calling_ae: str, tls_context=None, timeout: float = 30.0):
    def handle(job: Job) -> dict[str, Any]:
        dest = Destination.parse(job.payload["destination"], tls=job.payload.get("tls", False))
        files = [Path(f) for f in job.payload["files"]]
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise PermanentJobError(f"result files missing: {', '.join(missing)}")
        started = time.monotonic()
        try:
            report = send_files(dest, files, calling_ae, tls_context, timeout)
        except DispatchError:
            RESULTS_FAILED.labels(destination=str(dest)).inc(len(files))
            raise
        except (OSError, RuntimeError) as exc:
            RESULTS_FAILED.labels(destination=str(dest)).inc(len(files))
            raise DispatchError(f"{dest}: {type(exc).__name__}") from None
        RESULTS_SENT.labels(destination=str(dest)).inc(len(report.sent))
        record_stage("dispatch", time.monotonic() - started, job.id, job.payload.get("study_uid"))
        if job.payload.get("completed_at"):
            record_stage("end_to_end", time.time() - job.payload["completed_at"], job.id, job.payload.get("study_uid"))
        log.info("job %d: %d result(s) stored at %s", job.id, len(report.sent), dest)
        return {"destination": str(dest), "sent": report.sent, "warnings": report.warnings}

    return handle
