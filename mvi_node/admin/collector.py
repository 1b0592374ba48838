"""Metrics read from the node's stores at scrape time (served by the admin API's /metrics)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mvi_node.common.poller import failures
from mvi_node.config.sop_classes import sop_class_name
from mvi_node.jobs.store import JobState, JobStore
from mvi_node.stage.index import StagingIndex


class NodeCollector(Collector):
    def __init__(
        self,
        index: StagingIndex,
        jobs: JobStore,
        data_dir: Path,
        active_associations: Callable[[], int] = lambda: 0,
    ) -> None:
        self.index = index
        self.jobs = jobs
        self.data_dir = Path(data_dir)
        self.active_associations = active_associations

    def collect(self) -> Iterator:
        counts = self.index.counts()
        counters = self.index.counters()

        received = CounterMetricFamily("mvi_instances_received", "Instances staged (unique SOP Instance UIDs)")
        received.add_metric([], counts["instances"])
        yield received

        duplicates = CounterMetricFamily("mvi_duplicates", "Instances received again after being staged")
        duplicates.add_metric([], counts["duplicates"])
        yield duplicates

        rejected = CounterMetricFamily("mvi_instances_rejected", "Stores refused, by reason", labels=["reason"])
        assoc_rejected = CounterMetricFamily(
            "mvi_associations_rejected", "Associations refused, by reason", labels=["reason"]
        )
        unused = CounterMetricFamily(
            "mvi_unused_instances",
            "Instances of SOP classes no recipe reads, stored (ignored by selection) or discarded",
            labels=["action", "sop_class"],
        )
        for name, value in sorted(counters.items()):
            kind, _, reason = name.partition(":")
            if kind == "rejected":
                rejected.add_metric([reason], value)
            elif kind == "associations_rejected":
                assoc_rejected.add_metric([reason], value)
            elif kind == "unused":
                action, _, uid = reason.partition(":")
                unused.add_metric(["stored" if action == "store" else "discarded", sop_class_name(uid)], value)
        yield rejected
        yield assoc_rejected
        yield unused

        quarantined = CounterMetricFamily(
            "mvi_staged_files_quarantined", "Unreadable staged files moved to quarantine/ at start-up"
        )
        quarantined.add_metric([], counters.get("quarantined", 0))
        yield quarantined

        errors = CounterMetricFamily("mvi_background_errors",
                                     "Unexpected errors of background loops (each loop goes on), by thread",
                                     labels=["thread"])
        for thread, value in sorted(failures().items()):
            errors.add_metric([thread], value)
        yield errors

        completed = CounterMetricFamily("mvi_studies_completed", "Study rounds completed (quiet period over)")
        completed.add_metric([], self.index.completed_rounds())
        yield completed

        studies = GaugeMetricFamily("mvi_studies", "Studies known to the staging index")
        studies.add_metric([], counts["studies"])
        yield studies

        active = GaugeMetricFamily("mvi_active_associations", "Associations in progress (main listener process)")
        active.add_metric([], self.active_associations())
        yield active

        by_state = self.jobs.counts()
        jobs = GaugeMetricFamily("mvi_jobs", "Jobs by state", labels=["state"])
        for state, n in by_state.items():
            jobs.add_metric([state], n)
        yield jobs

        depth = GaugeMetricFamily("mvi_queue_depth", "Jobs waiting to run")
        depth.add_metric([], by_state.get(JobState.QUEUED.value, 0))
        yield depth

        oldest = self.jobs.oldest_created_at(JobState.QUEUED)
        age = GaugeMetricFamily("mvi_oldest_queued_job_age_seconds", "Age of the oldest queued job (0 when none)")
        age.add_metric([], 0.0 if oldest is None else max(0.0, time.time() - oldest))
        yield age

        dead = GaugeMetricFamily("mvi_dead_letters", "Jobs that exhausted their attempts")
        dead.add_metric([], by_state.get(JobState.DEAD.value, 0))
        yield dead

        disk = GaugeMetricFamily("mvi_free_disk_bytes", "Free space where the node stages data")
        disk.add_metric([], shutil.disk_usage(self.data_dir).free)
        yield disk
