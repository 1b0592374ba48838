"""Admin API routes for Orthanc: the plugin's stable-study hand-off, failing result sends.

Mounted by the admin app only when Orthanc is enabled (``orthanc.wiring``), so the
admin package needs no Orthanc import.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from mvi_node.jobs.store import JobStore
from mvi_node.orthanc.client import OrthancClient, OrthancError
from mvi_node.orthanc.intake import ORTHANC_IMPORT_JOB, import_job_key
from mvi_node.orthanc.results import failing_store_jobs


class StableStudy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    orthanc_study_id: str = Field(min_length=1, max_length=64, pattern=r"^[0-9a-f-]+$")


class Queued(BaseModel):
    job_id: int


def orthanc_router(jobs: JobStore, client: OrthancClient, guarded: list) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/orthanc/stable-study",
        response_model=Queued,
        status_code=202,
        dependencies=guarded,
        responses={
            400: {"description": "the body is not JSON"},
            404: {"description": "Orthanc no longer has the study"},
            502: {"description": "Orthanc did not answer"},
        },
        summary="Orthanc says a study is stable: queue its import into the node",
    )
    def stable_study(body: StableStudy) -> Queued:
        try:
            key = import_job_key(client, body.orthanc_study_id)
        except OrthancError as exc:
            if exc.status == 404:  # deleted before the hand-off arrived: nothing to import
                raise HTTPException(status_code=404, detail=str(exc)) from None
            raise HTTPException(status_code=502, detail=str(exc)) from None
        job = jobs.enqueue(ORTHANC_IMPORT_JOB, key, {"orthanc_study_id": body.orthanc_study_id})
        return Queued(job_id=job.id)

    @router.get(
        "/orthanc/store-jobs",
        dependencies=guarded,
        summary="Result sends through Orthanc that failed (retrying or dead), with the Orthanc job's error",
    )
    def store_jobs() -> list[dict]:
        return failing_store_jobs(jobs)

    return router
