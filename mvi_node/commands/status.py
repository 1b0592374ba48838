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
        counts["orthanc_store_failing"] = _orthanc_failing(jobs)
        jobs.close()
    else:
        counts["jobs"] = {state.value: 0 for state in JobState}
    return counts


def _orthanc_failing(jobs) -> list[dict[str, Any]]:
    """Result sends through Orthanc whose last attempt failed (mvi_node.orthanc.results)."""
    from mvi_node.orthanc.results import failing_store_jobs

    return failing_store_jobs(jobs)


def format_status(status: dict[str, Any]) -> str:
    jobs = ", ".join(f"{state} {n}" for state, n in status["jobs"].items())
    text = (
        f"studies     {status['studies']}\n"
        f"instances   {status['instances']}\n"
        f"duplicates  {status['duplicates']}\n"
        f"jobs        {jobs}"
    )
    for row in status.get("orthanc_store_failing", []):
        text += f"\northanc     job {row['job_id']} {row['state']} after {row['attempts']} attempts: {row['error']}"
    return text
