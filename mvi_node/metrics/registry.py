"""Metrics recorded where the event happens (stage timings, predictions, results)."""

from __future__ import annotations

import contextvars
import logging
import time
from contextlib import contextmanager
from typing import Iterator

from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger("mvi_node.stages")

#: the job (and study) being worked on in this thread, so stages deep inside a recipe
#: log and count against the right job without passing it down every call
CURRENT_JOB: contextvars.ContextVar[tuple[int | None, str | None]] = contextvars.ContextVar(
    "mvi_current_job", default=(None, None)
)

#: the stages an exam passes through; ``end_to_end`` spans study complete -> last result sent
STAGES = (
    "receive_to_complete",
    "select",
    "roi",
    "preprocess",
    # MR preprocessing steps (mvi_node.preprocess), each summed over an exam's sequences
    "mr_load",
    "mr_n4",
    "mr_normalise",
    "mr_register",
    "mr_resample",
    "infer",
    "report",
    "dispatch",
    "end_to_end",
)

STAGE_SECONDS = Histogram(
    "mvi_stage_duration_seconds",
    "Time spent per stage of an exam",
    ["stage"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
SERIES_SELECTED = Counter("mvi_series_selected", "Series given a role by selection", ["role"])
EXAMS_SKIPPED = Counter("mvi_exams_skipped", "Exams not inferred, by reason", ["reason"])
RESULTS_SENT = Counter("mvi_results_sent", "Result instances acknowledged by a destination", ["destination"])
RESULTS_FAILED = Counter("mvi_results_failed", "Result sends that failed, by destination", ["destination"])
PURGED = Counter("mvi_purged_total", "What retention removed: studies, instances, result folders, jobs", ["kind"])
PREDICTED_PROBABILITY = Histogram(
    "mvi_predicted_probability",
    "Predicted MVI probability per exam (watch for drift)",
    ["recipe"],
    buckets=tuple(round(0.1 * i, 1) for i in range(1, 11)),
)
MODEL_INFO = Gauge("mvi_model_info", "Models loaded (value 1)", ["recipe", "version", "sha256"])
INFERENCE_DEVICE = Gauge("mvi_inference_device", "Execution provider in use (value 1)", ["recipe", "device"])
GPU_MEMORY = Gauge("mvi_gpu_memory_bytes", "GPU memory in use by inference sessions", ["device"])

for _stage in STAGES:
    STAGE_SECONDS.labels(stage=_stage)


def record_stage(stage: str, seconds: float, job_id: int | None = None, study_uid: str | None = None) -> None:
    """One histogram sample and one log line (``stage``, ``job_id``, ``seconds`` fields)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    STAGE_SECONDS.labels(stage=stage).observe(seconds)
    current_job, current_study = CURRENT_JOB.get()
    job_id = job_id if job_id is not None else current_job
    study_uid = study_uid if study_uid is not None else current_study
    extra = {"stage": stage, "seconds": round(seconds, 4)}
    if job_id is not None:
        extra["job_id"] = job_id
    if study_uid is not None:
        extra["study_uid"] = study_uid
    log.info("stage %s took %.3f s (job %s)", stage, seconds, job_id if job_id is not None else "-", extra=extra)


@contextmanager
def observe_stage(stage: str, job_id: int | None = None, study_uid: str | None = None) -> Iterator[None]:
    """Time a block into ``mvi_stage_duration_seconds{stage=...}`` and the stage log."""
    start = time.monotonic()
    try:
        yield
    finally:
        record_stage(stage, time.monotonic() - start, job_id, study_uid)
