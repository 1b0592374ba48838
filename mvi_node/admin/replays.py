"""``/replays``: submit a replay of archived studies, follow it, cancel it (issue 14).

Answers carry UIDs, states, counts and reasons. The request's patient ID and accession
numbers are never echoed: a replay shows how many accessions it was given and whether a
patient ID was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from mvi_node.replay.plan import totals
from mvi_node.replay.request import ReplayRequest
from mvi_node.replay.progress import progress
from mvi_node.replay.sources import parse_ae
from mvi_node.replay.store import Replay, ReplayStore


def _iso(epoch: float | None) -> str | None:
    from mvi_node.admin.app import iso

    return iso(epoch) if epoch else None


class ReplaySummary(BaseModel):
    id: int
    state: str
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    query: dict[str, Any]
    progress: dict[str, Any]
    error: str | None = None
    notes: list[str] = Field(default_factory=list)
    cancel_requested: bool = False
    #: why retrieval waits right now (the archive's busy hours, the node's disk floor)
    paused: str = ""


class ReplayDetail(ReplaySummary):
    #: per study: UID, state, reason, and (the dry run's manifest) every series with its role and why
    studies: list[dict[str, Any]]
    totals: dict[str, int]


def summary(store: ReplayStore, r: Replay) -> ReplaySummary:
    return ReplaySummary(id=r.id, state=r.state, created_at=_iso(r.created_at) or "", started_at=_iso(r.started_at),
                         finished_at=_iso(r.finished_at), query=r.request.public(), progress=progress(store, r),
                         error=r.error, notes=r.notes, cancel_requested=r.cancel, paused=r.paused)


def detail(store: ReplayStore, r: Replay) -> ReplayDetail:
    rows = store.studies(r.id)
    studies = [{"study_uid": s.study_uid, "state": s.state, "reason": s.reason, "attempts": s.attempts,
                "instances_retrieved": s.retrieved, "failed_suboperations": s.failed_subops, "job": s.job_key,
                "study_date": s.plan.get("study_date"), "modalities": s.plan.get("modalities"),
                "recipes": s.plan.get("recipes"), "series": s.plan.get("series")} for s in rows]
    return ReplayDetail(**summary(store, r).model_dump(), studies=studies, totals=totals(s.plan for s in rows))


def _readable_folder(folder: str, roots: list[Path]) -> bool:
    """A folder under one of ``roots`` that exists (a NUL or an unencodable name is not)."""
    try:
        path = Path(folder).resolve()
        inside = any(path == Path(r).resolve() or Path(r).resolve() in path.parents for r in roots)
        return inside and path.is_dir()
    except (OSError, ValueError):
        return False


def replay_router(store: ReplayStore, known_pacs: Callable[[], set[str]],
                  folder_roots: Callable[[], list[Path]] = lambda: []) -> Callable[[list], APIRouter]:
    ids = PathParam(ge=1, le=2**62, description="replay id")

    def make(guarded: list) -> APIRouter:
        router = APIRouter(dependencies=guarded, tags=["replays"])

        @router.post("/replays", response_model=ReplaySummary, status_code=201,
                     responses={400: {"description": "the body is not JSON"},
                                404: {"description": "no such archive, or a folder the node may not read"},
                                422: {"description": "the request is invalid (the field and the rule)"}},
                     summary="Replay archived studies through the node")
        def submit(body: ReplayRequest) -> ReplaySummary:
            if body.pacs and body.pacs not in known_pacs():
                try:
                    parse_ae(body.pacs)
                except ValueError:
                    raise HTTPException(404, "pacs: not a configured archive ([replay.pacs.NAME])") from None
            if body.folder and not _readable_folder(body.folder, folder_roots()):
                raise HTTPException(404, "folder: not a folder under [replay] folder_roots")
            return summary(store, store.create(body))

        @router.get("/replays", response_model=list[ReplaySummary], summary="Replays, newest first")
        def list_replays(limit: int = Query(default=20, ge=1, le=500)) -> list[ReplaySummary]:
            return [summary(store, r) for r in store.list(limit)]

        @router.api_route("/replays", methods=["OPTIONS"], include_in_schema=False)
        def replays_options() -> Response:
            # one path, two routes: say both methods (Starlette's 405 would name the first only)
            return Response(status_code=405, headers={"Allow": "GET, POST"})

        @router.get("/replays/{replay_id}", response_model=ReplayDetail,
                    responses={404: {"description": "no such replay"}},
                    summary="One replay: progress, every study's state and reason, the plan")
        def get_replay(replay_id: int = ids) -> ReplayDetail:
            r = store.get(replay_id)
            if r is None:
                raise HTTPException(404, "no such replay")
            return detail(store, r)

        @router.post("/replays/{replay_id}/cancel", response_model=ReplaySummary,
                     responses={404: {"description": "no such replay"}, 409: {"description": "already finished"}},
                     summary="Cancel a replay: C-CANCEL for moves in flight, the rest is not retrieved")
        def cancel(replay_id: int = ids) -> ReplaySummary:
            r = store.get(replay_id)
            if r is None:
                raise HTTPException(404, "no such replay")
            if not store.request_cancel(replay_id):
                raise HTTPException(409, f"the replay is {r.state}")
            return summary(store, store.get(replay_id))  # type: ignore[arg-type]

        return router

    return make
