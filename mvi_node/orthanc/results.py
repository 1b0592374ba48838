"""Results through Orthanc: upload to the staging Orthanc, let Orthanc C-STORE to PACS.

Orthanc runs the C-STORE as an asynchronous job and does not retry a failed job by
itself, so the node watches ``/jobs/{id}`` and resubmits a failed job a few times with
back-off (``mvi_orthanc_jobs_failed_total``, ``mvi_orthanc_jobs_resubmitted_total``).
If it still fails, the node job fails and gets the same durable back-off and dead
letter as direct C-STORE; its error names the Orthanc job, so ``mvi-node status`` and
``GET /orthanc/store-jobs`` show it. A failed send is also counted per destination
(``mvi_results_failed_total{destination="orthanc:<modality>"}``). After success the
study leaves the staging Orthanc when retention is 0 (otherwise ``RetentionSweeper``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from mvi_node.jobs.store import Job, JobState, JobStore
from mvi_node.jobs.worker import PermanentJobError
from mvi_node.metrics import RESULTS_FAILED, RESULTS_SENT, record_stage
from mvi_node.orthanc.client import OrthancClient, OrthancError

log = logging.getLogger("mvi_node.orthanc")

ORTHANC_STORE_JOB = "orthanc-store"

ORTHANC_JOBS_FAILED = Counter("mvi_orthanc_jobs_failed", "Orthanc store jobs seen failed, by modality", ["modality"])
ORTHANC_JOBS_RESUBMITTED = Counter("mvi_orthanc_jobs_resubmitted", "Orthanc store jobs resubmitted", ["modality"])

#: (seconds to wait before each resubmission) inside one node attempt; the node job's
#: own back-off takes over after the last one
RESUBMIT_DELAYS = (1.0, 4.0)
#: how long one Orthanc store job may stay pending/running before the attempt gives up
JOB_TIMEOUT_S = 300.0


def wait_orthanc_job(client: OrthancClient, job_id: str, timeout: float = JOB_TIMEOUT_S) -> dict:
    """Poll an Orthanc job until it ends (Success/Failure) or the timeout passes."""
    deadline, pause = time.monotonic() + timeout, 0.2
    while True:
        info = client.job(job_id)
        if info.get("State") in ("Success", "Failure"):
            return info
        if time.monotonic() > deadline:
            raise OrthancError(f"Orthanc job {job_id} still {info.get('State')} after {timeout:.0f} s")
        time.sleep(pause)
        pause = min(pause * 2, 2.0)


def store_with_resubmit(client: OrthancClient, modality: str, ids: list[str],
                        delays: tuple[float, ...] = RESUBMIT_DELAYS) -> str:
    """Run Orthanc's store job to ``modality``; resubmit it on failure; return its ID."""
    job_id = client.store_to_modality(modality, ids)
    for delay in (*delays, None):
        info = wait_orthanc_job(client, job_id)
        if info["State"] == "Success":
            return job_id
        ORTHANC_JOBS_FAILED.labels(modality=modality).inc()
        reason = info.get("ErrorDescription") or f"error code {info.get('ErrorCode')}"
        if delay is None:
            raise OrthancError(f"Orthanc store job {job_id} to {modality} failed: {reason}")
        log.warning("Orthanc store job %s to %s failed (%s); resubmitting in %.0f s", job_id, modality, reason, delay)
        time.sleep(delay)
        client.resubmit_job(job_id)
        ORTHANC_JOBS_RESUBMITTED.labels(modality=modality).inc()
    raise AssertionError("unreachable")


def failing_store_jobs(jobs: JobStore) -> list[dict[str, Any]]:
    """Node store jobs whose last attempt failed (waiting to retry) or that are dead."""
    rows = []
    for state in (JobState.QUEUED, JobState.FAILED, JobState.DEAD):
        for job in jobs.list(state, limit=1000):
            if job.kind == ORTHANC_STORE_JOB and job.last_error:
                rows.append({"job_id": job.id, "state": job.state.value, "attempts": job.attempts,
                             "modality": job.payload.get("modality"), "error": job.last_error})
    return rows


def enqueue_orthanc_store(jobs: JobStore, files: list[Path], modality: str, result_key: str, study_uid: str,
                          max_attempts: int, completed_at: float | None = None) -> Job:
    payload = {"files": [str(f) for f in files], "modality": modality, "study_uid": study_uid,
               "completed_at": completed_at}
    return jobs.enqueue(ORTHANC_STORE_JOB, f"orthanc-store:{result_key}:{modality}", payload, max_attempts)


def make_orthanc_store_handler(client: OrthancClient, retention_hours: float):
    def handle(job: Job) -> dict[str, Any]:
        files = [Path(f) for f in job.payload["files"]]
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise PermanentJobError(f"result files missing: {', '.join(missing)}")
        destination = f"orthanc:{job.payload['modality']}"
        started = time.monotonic()
        try:
            uploaded = [client.upload(f.read_bytes()) for f in files]  # idempotent: same UIDs, same IDs
            ids = [u["ID"] for u in uploaded]
            orthanc_job = store_with_resubmit(client, job.payload["modality"], ids)
        except OrthancError:
            RESULTS_FAILED.labels(destination=destination).inc(len(files))
            raise
        RESULTS_SENT.labels(destination=destination).inc(len(files))
        record_stage("dispatch", time.monotonic() - started, job.id, job.payload.get("study_uid"))
        if job.payload.get("completed_at"):
            record_stage("end_to_end", time.time() - job.payload["completed_at"], job.id, job.payload.get("study_uid"))
        cleaned = False
        if retention_hours <= 0:
            # the results sit in the source study: deleting it drops the staged copy entirely
            for study_id in {u["ParentStudy"] for u in uploaded}:
                client.delete_study(study_id)
            cleaned = True
        return {"destination": destination, "orthanc_instances": ids, "orthanc_job": orthanc_job,
                "orthanc_studies": sorted({u["ParentStudy"] for u in uploaded}), "staging_cleaned": cleaned}

    return handle


class RetentionSweeper:
    """Deletes a study from the staging Orthanc ``retention_hours`` after its results went out.

    Driven by done store jobs (not by Orthanc's LastUpdate), so a study whose results
    have not been delivered is never deleted. Swept jobs are remembered in memory; after
    a restart the first sweep repeats a few deletes, which Orthanc answers with 404.
    """

    def __init__(self, client: OrthancClient, jobs: JobStore, retention_hours: float) -> None:
        self.client, self.jobs, self.retention_s = client, jobs, retention_hours * 3600
        self._swept: set[int] = set()

    def _done_store_jobs(self):
        """Every done job, page by page: the newest 1000 are not all there is."""
        before = None
        while True:
            page = self.jobs.list(JobState.DONE, limit=500, before_id=before)
            if not page:
                return
            yield from page
            before = page[-1].id

    def sweep(self, now: float | None = None) -> int:
        now, deleted = time.time() if now is None else now, 0
        for job in self._done_store_jobs():
            if job.kind != ORTHANC_STORE_JOB or job.id in self._swept or job.result.get("staging_cleaned"):
                continue
            if now - job.updated_at < self.retention_s:
                continue
            for study_id in job.result.get("orthanc_studies", []):
                try:
                    self.client.delete_study(study_id)
                    deleted += 1
                except OrthancError as exc:
                    if exc.status != 404:  # already gone is what we wanted
                        raise
            self._swept.add(job.id)
        return deleted
