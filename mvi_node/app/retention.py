"""Retention: what the node keeps, so that it can run for years (``[retention]``).

Every ``interval_s`` (and once at start): staged studies whose last instance is older
than ``staging_days``, result folders older than ``results_days`` and finished jobs older
than ``jobs_days`` are removed, and below ``free_disk_target_mb`` free the oldest
finished studies go first, whatever their age. Never a study that has a queued or
running job, never a result file a queued or running delivery still reads. A purged
study folder is first moved out of staging (``purging/``), so a crash half-way leaves
nothing that start-up would re-index.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from mvi_node.common.poller import Poller
from mvi_node.config import Settings
from mvi_node.jobs.store import JobState, JobStore
from mvi_node.metrics import PURGED
from mvi_node.stage.index import StagingIndex

log = logging.getLogger("mvi_node.retention")
DAY = 86400.0


class Retention(Poller):
    thread_name = "retention"
    failure_message = "retention pass failed"
    logger = log

    def __init__(self, settings: Settings, index: StagingIndex, jobs: JobStore) -> None:
        super().__init__(settings.retention.interval_s)
        self.cfg, self.index, self.jobs = settings.retention, index, jobs
        self.staging, self.results = settings.staging_dir, settings.results_dir
        self.purging = settings.data_dir / "purging"
        self.data_dir = settings.data_dir

    def poll(self) -> bool:
        self.run_once()
        return False

    def first_pass(self) -> bool:
        self.run_once()
        return True

    # -- what is still in use --------------------------------------------------------

    def _active(self) -> tuple[set[str], set[str]]:
        """(study UIDs, result file paths) that queued or running jobs still need."""
        studies, files = set(), set()
        for state in (JobState.QUEUED, JobState.RUNNING):
            before = None
            while page := self.jobs.list(state, limit=500, before_id=before):
                for job in page:
                    if job.payload.get("study_uid"):
                        studies.add(str(job.payload["study_uid"]))
                    files.update(str(f) for f in job.payload.get("files", []))
                before = page[-1].id
        return studies, files

    def _free_mb(self) -> float:
        return shutil.disk_usage(self.data_dir).free / (1 << 20)

    # -- one pass ----------------------------------------------------------------------

    def run_once(self, now: float | None = None) -> dict[str, int]:
        now = time.time() if now is None else now
        shutil.rmtree(self.purging, ignore_errors=True)  # a crash's leftovers
        busy, needed = self._active()
        done = {"studies": 0, "instances": 0, "results": 0, "jobs": 0}
        candidates = self.index.finished_studies(now if self.cfg.free_disk_target_mb else
                                                 now - self.cfg.staging_days * DAY)
        for study, last in candidates:
            old = self.cfg.staging_days > 0 and last < now - self.cfg.staging_days * DAY
            short = self.cfg.free_disk_target_mb > 0 and self._free_mb() < self.cfg.free_disk_target_mb
            if study in busy or not (old or short):
                continue
            done["instances"] += self._purge_study(study)
            done["studies"] += 1
        if self.cfg.results_days > 0 and self.results.is_dir():
            for folder in sorted(p for p in self.results.iterdir() if p.is_dir()):
                files = [f for f in folder.iterdir() if f.is_file()]
                if any(str(f) in needed for f in files) or folder.name in busy:
                    continue
                if files and max(f.stat().st_mtime for f in files) < now - self.cfg.results_days * DAY:
                    shutil.rmtree(folder, ignore_errors=True)
                    done["results"] += 1
        if self.cfg.jobs_days > 0:
            done["jobs"] = self.jobs.forget_finished(now - self.cfg.jobs_days * DAY)
        for kind, n in done.items():
            if n:
                PURGED.labels(kind=kind).inc(n)
        if any(done.values()):
            log.info("retention: %d studies (%d instances), %d result folders, %d jobs removed",
                     done["studies"], done["instances"], done["results"], done["jobs"])
        return done

    def _purge_study(self, study: str) -> int:
        folder = self.staging / study
        if folder.is_dir():
            self.purging.mkdir(parents=True, exist_ok=True)
            folder.rename(self.purging / study)  # out of staging first: nothing left to re-index
        n = self.index.forget_study(study)
        shutil.rmtree(self.purging / study, ignore_errors=True)
        return n
