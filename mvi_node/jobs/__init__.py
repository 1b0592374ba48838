"""Durable jobs: what the node still has to do, and what it did."""

from pathlib import Path

from mvi_node.jobs.sqlite import SqliteJobStore
from mvi_node.jobs.store import Job, JobState, JobStore

__all__ = ["Job", "JobState", "JobStore", "open_job_store"]


def open_job_store(backend: str, path: Path, max_attempts: int = 3) -> JobStore:
    """Return the configured backend; a server-grade one (the scale-out engine's) slots in here."""
    if backend == "sqlite":
        return SqliteJobStore(path, default_max_attempts=max_attempts)
    raise ValueError(f"unknown job store backend: {backend}")
