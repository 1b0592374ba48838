"""The admin API (FastAPI). Bound to 127.0.0.1 by default; a bearer token guards it
whenever one is configured (and configuration insists on one off loopback), the
OpenAPI document and ``/docs`` included.

Responses carry UIDs, states and timings; never patient names, IDs or birth dates:
``POST /clinical-factors`` answers which key the factors were filed under, not its
value, and validation errors name the field and the rule, never the value sent.
"""

from __future__ import annotations

import datetime as dt
import hmac
from typing import Any, Callable, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field

from mvi_node import __version__
from mvi_node.admin.clinical import ClinicalFactorsIn, ClinicalFactorStore
from mvi_node.jobs.store import Job, JobState, JobStore

#: a readiness check returns (ok, detail); detail is shown to operators
ReadinessCheck = Callable[[], tuple[bool, str]]


class ResultSummary(BaseModel):
    """One recipe's result of a study job, as a person reads it."""

    recipe: str
    outcome: str
    probability: float | None = None
    decision: bool | None = None
    sr: str | None = None
    version: int | None = None
    supersedes: str | None = None
    #: the SR of the newer version that replaced this one (among the jobs listed)
    superseded_by: str | None = None


class JobSummary(BaseModel):
    id: int
    kind: str
    state: JobState
    attempts: int
    max_attempts: int
    #: ISO 8601, UTC
    created_at: str
    updated_at: str
    study_uid: str | None = None
    results: list[ResultSummary] = Field(default_factory=list)
    last_error: str | None = None


class JobDetail(JobSummary):
    key: str
    not_before: str
    payload: dict[str, Any]
    result: dict[str, Any]


class Check(BaseModel):
    ok: bool
    detail: str


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, Check]


class Health(BaseModel):
    status: str = "ok"
    version: str = __version__


class Stored(BaseModel):
    filed_under: Literal["accession_number", "patient_id"] = Field(
        description="which key the factors are filed under (its value is not echoed)"
    )
    stored: bool = True


def iso(epoch: float) -> str:
    """ISO 8601 in UTC, to the millisecond."""
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _results(job: Job) -> list[ResultSummary]:
    out = []
    for exam in job.result.get("inference", []) if isinstance(job.result, dict) else []:
        for r in exam:
            if not r.get("reported", True):
                continue
            o = r.get("outputs") or {}
            out.append(ResultSummary(recipe=r.get("recipe") or "(none)", outcome=r.get("outcome", ""),
                                     probability=r.get("probability"), decision=r.get("decision"),
                                     sr=o.get("sr"), version=o.get("version"), supersedes=o.get("supersedes")))
    return out


def _summary(job: Job) -> JobSummary:
    return JobSummary(
        id=job.id,
        kind=job.kind,
        state=job.state,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        created_at=iso(job.created_at),
        updated_at=iso(job.updated_at),
        study_uid=job.payload.get("study_uid"),
        results=_results(job),
        last_error=job.last_error,
    )


def summaries(listed: list[Job]) -> list[JobSummary]:
    """Job summaries, each result marked with the newer version that superseded it."""
    out = [_summary(j) for j in listed]
    newer = {r.supersedes: r.sr for s in out for r in s.results if r.supersedes}
    for s in out:
        for r in s.results:
            r.superseded_by = newer.get(r.sr)
    return out


def filtered(jobs: JobStore, state: JobState | None, study: str | None, kind: str | None, limit: int) -> list[Job]:
    """Newest first, by state, study and kind, paging the store until ``limit`` match."""
    out, before = [], None
    while len(out) < limit and (page := jobs.list(state, limit=500, before_id=before)):
        out += [j for j in page if (study is None or j.payload.get("study_uid") == study)
                and (kind is None or j.kind == kind)]
        before = page[-1].id
    return out[:limit]


def create_app(
    jobs: JobStore,
    checks: dict[str, ReadinessCheck],
    clinical: ClinicalFactorStore,
    token: str | None = None,
    node_registry: CollectorRegistry | None = None,
    routers: list | None = None,
) -> FastAPI:
    """``node_registry`` holds this node's store-backed collector; the process-wide
    registry holds what stages record. Both are exposed on ``/metrics``."""
    docs_open = not token
    app = FastAPI(
        title="mvi-node admin API",
        version=__version__,
        description="Health, readiness, metrics and job control of an mvi-node DICOM node.",
        # with a token, the spec and the docs are served below, behind it
        openapi_url="/openapi.json" if docs_open else None,
        docs_url="/docs" if docs_open else None,
        redoc_url="/redoc" if docs_open else None,
    )
    bearer = HTTPBearer(auto_error=False)

    def authorised(creds: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
        if creds is None or not hmac.compare_digest(creds.credentials.encode(), (token or "").encode()):
            raise HTTPException(status_code=401, detail="bearer token required", headers={"WWW-Authenticate": "Bearer"})

    # The spec declares bearer security only when a token is configured, so what
    # /openapi.json promises is what the server enforces.
    guarded = [Depends(authorised)] if token else []

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default answer quotes the input (a patient ID, say): keep where and why only.
        detail = [
            {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))}
            for err in exc.errors()
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    if not docs_open:

        @app.get("/openapi.json", include_in_schema=False, dependencies=guarded)
        def openapi_document() -> JSONResponse:
            return JSONResponse(app.openapi())

        @app.get("/docs", include_in_schema=False, dependencies=guarded)
        def docs():
            return get_swagger_ui_html(openapi_url="/openapi.json", title=app.title)

    @app.get("/healthz", response_model=Health, summary="The process is alive")
    def healthz() -> Health:
        return Health()

    @app.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "a check failed"}},
        dependencies=guarded,
        summary="Model loaded, storage writable, job store reachable, destinations answer C-ECHO",
    )
    def readyz(response: Response) -> Readiness:
        results = {}
        for name, check in checks.items():
            try:
                ok, detail = check()
            except Exception as exc:  # a failing probe is a "not ready", not a 500
                ok, detail = False, f"{type(exc).__name__}"
            results[name] = Check(ok=ok, detail=detail)
        ready = all(c.ok for c in results.values())
        if not ready:
            response.status_code = 503
        return Readiness(ready=ready, checks=results)

    @app.get(
        "/metrics",
        dependencies=guarded,
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    )
    def metrics() -> Response:
        body = generate_latest(REGISTRY)
        if node_registry is not None:
            body += generate_latest(node_registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/jobs", response_model=list[JobSummary], dependencies=guarded, summary="Jobs, newest first")
    def list_jobs(
        state: JobState | None = Query(default=None),
        study: str | None = Query(default=None, max_length=64, description="StudyInstanceUID"),
        kind: str | None = Query(default=None, max_length=32),
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> list[JobSummary]:
        return summaries(filtered(jobs, state, study, kind, limit))

    @app.get(
        "/jobs/{job_id}",
        response_model=JobDetail,
        responses={404: {"description": "no such job"}},
        dependencies=guarded,
        summary="One job: selection report, timings, outputs, errors",
    )
    def get_job(job_id: int) -> JobDetail:
        job = jobs.get(job_id)
        if job is None:
            raise HTTPException(status_code=404, detail="no such job")
        return JobDetail(**_summary(job).model_dump(), key=job.key, not_before=iso(job.not_before),
                         payload=job.payload, result=job.result)

    @app.post(
        "/jobs/{job_id}/retry",
        response_model=JobSummary,
        responses={404: {"description": "no such job"}, 409: {"description": "the job is running"}},
        dependencies=guarded,
        summary="Queue a job again with a fresh attempt budget",
    )
    def retry_job(job_id: int) -> JobSummary:
        if jobs.get(job_id) is None:
            raise HTTPException(status_code=404, detail="no such job")
        try:
            return _summary(jobs.requeue(job_id))
        except ValueError:
            raise HTTPException(status_code=409, detail="the job is running") from None

    @app.post(
        "/clinical-factors",
        response_model=Stored,
        status_code=201,
        responses={400: {"description": "the body is not JSON"}},
        dependencies=guarded,
        summary="File clinical factors for an exam (by accession number or patient ID)",
    )
    def post_clinical_factors(body: ClinicalFactorsIn) -> Stored:
        clinical.put(body)
        return Stored(filed_under="accession_number" if body.accession_number else "patient_id")

    for make_router in routers or []:
        app.include_router(make_router(guarded))
    return app
