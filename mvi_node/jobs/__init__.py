"""Durable jobs: what the node still has to do, and what it did."""

from mvi_node.jobs.store import Job, JobState, JobStore, open_job_store

__all__ = ["Job", "JobState", "JobStore", "open_job_store"]
