"""What a completed study job does.

Each stage after staging plugs in here as it lands (select -> ROI -> infer -> report
-> dispatch); the job result records what every stage found, so ``/jobs/{id}`` and
``mvi-node status`` can show it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mvi_node.jobs.store import Job
from mvi_node.metrics import EXAMS_SKIPPED, SERIES_SELECTED, observe_stage
from mvi_node.jobs.worker import PermanentJobError
from mvi_node.stage.index import StagingIndex


#: Job results are served by the admin API and end up in tickets: UIDs only.
_IDENTIFIERS = ("patient_id", "accession_number", "patient_name", "patient_birth_date")


def _without_identifiers(report: Any) -> Any:
    if isinstance(report, dict):
        return {k: _without_identifiers(v) for k, v in report.items() if k not in _IDENTIFIERS}
    if isinstance(report, list):
        return [_without_identifiers(v) for v in report]
    return report


def _count_selection(report: dict[str, Any]) -> None:
    for exam in report.get("studies", []):
        for series in exam.get("series", []):
            SERIES_SELECTED.labels(role=series.get("role", "other")).inc()
        if not exam.get("recipes"):
            EXAMS_SKIPPED.labels(reason="no eligible series").inc()


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
                with observe_stage("select", job.id, study_uid):
                    result["selection"] = _without_identifiers(staged_selection(staging_dir, study_uid, rules_file))
                _count_selection(result["selection"])
            except RuleError as exc:  # a bad site rules file: retrying cannot help
                raise PermanentJobError(f"selection rules: {exc}") from exc
        return result

    return handle
