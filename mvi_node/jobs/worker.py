"""Runs queued jobs: claim, call the handler for the job's kind, record the outcome."""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

from mvi_node.common.poller import Poller
from mvi_node.jobs.store import Job, JobState, JobStore
from mvi_node.metrics.registry import CURRENT_JOB

log = logging.getLogger("mvi_node.jobs")

JobHandler = Callable[[Job], dict[str, Any]]


class PermanentJobError(Exception):
    """Retrying cannot help (bad input): the job goes to ``failed`` at once."""


class JobWorker(Poller):
    thread_name = "job-worker"
    join_timeout = 30.0
    failure_message = "job worker pass failed"
    logger = log

    def __init__(
        self,
        store: JobStore,
        handlers: dict[str, JobHandler],
        poll_seconds: float = 0.5,
        backoff_seconds: float = 30.0,
        backoff_max_seconds: float = 900.0,
        name: str | None = None,
    ) -> None:
        super().__init__(poll_seconds)
        self.store = store
        self.handlers = handlers
        self.backoff_seconds = backoff_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.name = name or f"{os.uname().nodename}:{os.getpid()}"
        # a job queued in this process starts at once; poll_seconds only finds the others
        store.on_enqueue(handlers, self.wake)
        #: wall time this worker last became free (a job queued while it was busy waits for
        #: that work, not for the hand-over)
        self._idle_since = time.time()

    def run_one(self) -> Job | None:
        job = self.store.claim(list(self.handlers), worker=self.name)
        if job is None:
            return None
        started = time.monotonic()
        # how long the job sat claimable before a worker took it (the hand-over gap)
        now = time.time()
        claimable = max(job.created_at, job.not_before)
        waited = max(0.0, now - claimable)
        # the part of it this worker was free: what a polling interval would add
        pickup = max(0.0, now - max(claimable, self._idle_since))
        token = CURRENT_JOB.set((job.id, job.payload.get("study_uid")))
        try:
            result = self.handlers[job.kind](job)
        except PermanentJobError as exc:
            self.store.fail(job.id, str(exc), permanent=True)
            log.error("job %d (%s) failed: %s", job.id, job.kind, exc)
        except Exception as exc:
            delay = min(self.backoff_seconds * 2 ** (job.attempts - 1), self.backoff_max_seconds)
            state = self.store.fail(job.id, f"{type(exc).__name__}: {exc}", retry_in=delay)
            log.warning(
                "job %d (%s) attempt %d failed (%s); now %s", job.id, job.kind, job.attempts, type(exc).__name__, state.value
            )
        else:
            result = dict(result or {})
            result.setdefault("seconds", round(time.monotonic() - started, 3))
            result.setdefault("waited_seconds", round(waited, 3))
            result.setdefault("pickup_seconds", round(pickup, 3))
            self.store.complete(job.id, result)
            log.info("job %d (%s) done in %.2f s", job.id, job.kind, result["seconds"])
        finally:
            CURRENT_JOB.reset(token)
            self._idle_since = time.time()
        return self.store.get(job.id)

    def poll(self) -> bool:
        return self.run_one() is not None


__all__ = ["JobWorker", "PermanentJobError", "JobState"]
