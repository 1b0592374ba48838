"""Results through Orthanc: upload to the staging Orthanc, let Orthanc C-STORE to PACS.

Orthanc does not retry a failed store job by itself, so this runs as a node job with
the same back-off and dead letter as direct C-STORE; a failure is counted per
destination (``mvi_results_failed_total{destination="orthanc:<modality>"}``) and shows in
the job store. After success the study leaves the staging Orthanc when retention is 0.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from mvi_node.jobs.store import Job, JobStore
from mvi_node.jobs.worker import PermanentJobError
from mvi_node.metrics import RESULTS_FAILED, RESULTS_SENT, record_stage
from mvi_node.stage.orthanc import OrthancClient, OrthancError

log = logging.getLogger("mvi_node.orthanc")

ORTHANC_STORE_JOB = "orthanc-store"


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
            client.store_to_modality(job.payload["modality"], ids)
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
        return {"destination": destination, "orthanc_instances": ids, "staging_cleaned": cleaned}

    return handle
