"""Result sink "cstore": one durable C-STORE job per result set and destination.

A thin adapter over :func:`mvi_node.dispatch.jobs.enqueue_dispatch`, so the study
pipeline sees every delivery path through the one ``ResultSink`` interface.
"""

from __future__ import annotations

from mvi_node.config.destination import Destination
from mvi_node.dispatch.jobs import enqueue_dispatch
from mvi_node.dispatch.sink import ResultSet, ResultSink, register_sink
from mvi_node.jobs.store import Job, JobStore


@register_sink
class CStoreSink(ResultSink):
    kind = "cstore"

    def __init__(self, jobs: JobStore, destinations: list[Destination], max_attempts: int) -> None:
        self.jobs = jobs
        self.destinations = list(destinations)
        self.max_attempts = max_attempts

    def queue(self, result: ResultSet) -> list[Job]:
        return enqueue_dispatch(
            self.jobs,
            list(result.files),
            self.destinations,
            result.key,
            result.study_uid,
            self.max_attempts,
            result.completed_at,
        )
