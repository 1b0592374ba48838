"""The job-store interface every backend implements.

A job is keyed by a caller-chosen ``key`` (e.g. ``study:<uid>:round:<n>``): enqueueing
the same key twice returns the existing job, which makes hand-offs idempotent across
crashes. States: ``queued`` -> ``running`` -> ``done``; a failure either goes back to
``queued`` with a back-off (attempts left), to ``dead`` (attempts exhausted: the
dead-letter state) or to ``failed`` (not worth retrying).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    DEAD = "dead"


@dataclass
class Job:
    id: int
    kind: str
    key: str
    state: JobState
    attempts: int
    max_attempts: int
    payload: dict[str, Any]
    created_at: float
    updated_at: float
    not_before: float = 0.0
    last_error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)


class JobStore(Protocol):
    def enqueue(self, kind: str, key: str, payload: dict[str, Any], max_attempts: int | None = None,
                not_before: float = 0.0) -> Job:
        """Idempotent by ``key``; the job is not claimed before ``not_before`` (epoch seconds)."""

    def claim(self, kinds: list[str] | None = None, worker: str = "") -> Job | None: ...

    def on_enqueue(self, kinds: Iterable[str], callback: Callable[[], None]) -> None:
        """Call ``callback`` (no arguments, must not block) whenever this store object
        queues a job of one of ``kinds``: a worker in this process wakes at once instead
        of at its next poll. Jobs queued by other processes are still found by polling."""

    def complete(self, job_id: int, result: dict[str, Any] | None = None) -> None: ...

    def fail(self, job_id: int, error: str, retry_in: float | None = None, permanent: bool = False) -> JobState: ...

    def requeue(self, job_id: int) -> Job: ...

    def recover(self) -> int: ...

    def get(self, job_id: int) -> Job | None: ...

    def by_key(self, key: str) -> Job | None:
        """The job enqueued under ``key``, if any."""

    def list(self, state: JobState | None = None, limit: int = 100, before_id: int | None = None) -> list[Job]:
        """Newest first; ``before_id`` pages on (ids below it)."""

    def counts(self) -> dict[str, int]: ...

    def forget_finished(self, updated_before: float) -> int:
        """Delete done/failed/dead jobs last updated before ``updated_before``."""

    def oldest_created_at(self, state: JobState) -> float | None: ...

    def close(self) -> None: ...
