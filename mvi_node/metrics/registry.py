"""Metrics recorded where the event happens (stage timings, predictions, results)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from prometheus_client import Counter, Gauge, Histogram

#: the stages an exam passes through; ``end_to_end`` spans study complete -> last result sent
STAGES = (
    "receive_to_complete",
    "select",
    "roi",
    "preprocess",
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
SERIES_SELECTED = Counter("mvi_series_selected_total", "Series given a role by selection", ["role"])
EXAMS_SKIPPED = Counter("mvi_exams_skipped_total", "Exams not inferred, by reason", ["reason"])
RESULTS_SENT = Counter("mvi_results_sent_total", "Result instances acknowledged by a destination", ["destination"])
RESULTS_FAILED = Counter("mvi_results_failed_total", "Result sends that failed, by destination", ["destination"])
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


@contextmanager
def observe_stage(stage: str) -> Iterator[None]:
    """Time a block into ``mvi_stage_duration_seconds{stage=...}``."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    start = time.monotonic()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(stage=stage).observe(time.monotonic() - start)
