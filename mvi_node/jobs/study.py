"""What a completed study job does.

Each stage after staging plugs in here as it lands (select -> ROI -> infer -> report
-> dispatch); the job result records what every stage found, so ``/jobs/{id}`` and
``mvi-node status`` can show it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mvi_node.jobs.store import Job
from mvi_node.jobs.worker import PermanentJobError
from mvi_node.stage.index import StagingIndex


def make_study_handler(index: StagingIndex, staging_dir: Path | None = None, rules_file: Path | None = None):
    def handle(job: Job) -> dict[str, Any]:
        study_uid = job.payload["study_uid"]
        series = index.series_of(study_uid)
        if not series:
            raise PermanentJobError(f"study {study_uid} has no staged instances")
        result = {
            "study_uid": study_uid,
            "round": job.payload.get("round", 1),
            "series": {uid: len(sops) for uid, sops in series.items()},
            "instances": sum(len(s) for s in series.values()),
        }
        if staging_dir is not None:
            from mvi_node.select.job import staged_selection
            from mvi_node.select.rules import RuleError

            # roles of every series and the recipes the exam qualifies for (or why not)
            try:
                result["selection"] = staged_selection(staging_dir, study_uid, rules_file)
            except RuleError as exc:  # a bad site rules file: retrying cannot help
                raise PermanentJobError(f"selection rules: {exc}") from exc
        return result

    return handle
