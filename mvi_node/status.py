"""What the node holds and what it is doing, read straight from its stores."""

from __future__ import annotations

from typing import Any

from mvi_node.config import Settings
from mvi_node.jobs import JobState, open_job_store
from mvi_node.stage.index import StagingIndex


def node_status(settings: Settings) -> dict[str, Any]:
    if not settings.index_db.exists():
        counts: dict[str, Any] = {"studies": 0, "instances": 0, "duplicates": 0}
    else:
        index = StagingIndex(settings.index_db)
        counts = index.counts()
        index.close()
    if settings.jobs_db.exists():
        jobs = open_job_store(settings.jobs.backend, settings.jobs_db)
        counts["jobs"] = jobs.counts()
        jobs.close()
    else:
        counts["jobs"] = {state.value: 0 for state in JobState}
    return counts


def format_status(status: dict[str, Any]) -> str:
    jobs = ", ".join(f"{state} {n}" for state, n in status["jobs"].items())
    return (
        f"studies     {status['studies']}\n"
        f"instances   {status['instances']}\n"
        f"duplicates  {status['duplicates']}\n"
        f"jobs        {jobs}"
    )
