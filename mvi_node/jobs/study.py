"""What a completed study job does.

Each stage after staging plugs in here as it lands (select -> ROI -> infer -> report
-> dispatch); the job result records what every stage found, so ``/jobs/{id}`` and
``mvi-node status`` can show it.
"""

from __future__ import annotations

from typing import Any

from mvi_node.jobs.store import Job
from mvi_node.jobs.worker import PermanentJobError
from mvi_node.stage.index import StagingIndex


def make_study_handler(index: StagingIndex):
    def handle(job: Job) -> dict[str, Any]:
        study_uid = job.payload["study_uid"]
        series = index.series_of(study_uid)
        if not series:
            raise PermanentJobError(f"study {study_uid} has no staged instances")
        return {
            "study_uid": study_uid,
            "round": job.payload.get("round", 1),
            "series": {uid: len(sops) for uid, sops in series.items()},
            "instances": sum(len(s) for s in series.values()),
        }

    return handle
