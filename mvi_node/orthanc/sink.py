"""Result sink "orthanc": upload the result set to the staging Orthanc, which C-STOREs it on.

A thin adapter over :func:`mvi_node.orthanc.results.enqueue_orthanc_store` (one job per
result set and Orthanc modality, idempotent by the result's key).
"""

from __future__ import annotations

from mvi_node.dispatch.sink import ResultSet, ResultSink, register_sink
from mvi_node.jobs.store import Job, JobStore
from mvi_node.orthanc.results import enqueue_orthanc_store


@register_sink
class OrthancSink(ResultSink):
    kind = "orthanc"

    def __init__(self, jobs: JobStore, modality: str, max_attempts: int) -> None:
        self.jobs = jobs
        self.modality = modality
        self.max_attempts = max_attempts

    def queue(self, result: ResultSet) -> list[Job]:
        return [
            enqueue_orthanc_store(
                self.jobs,
                list(result.files),
                self.modality,
                result.key,
                result.study_uid,
                self.max_attempts,
                result.completed_at,
            )
        ]
