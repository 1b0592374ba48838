"""Prometheus metrics, prefix ``mvi_``. Labels carry codes, roles, recipes and AE
addresses, never patient data.

Two kinds: counters and histograms recorded in-process by the stage that observes the
event (stage durations, predictions, results sent), and a collector that reads the
node's stores at scrape time (instances, rejections, jobs), so every listener process
is counted once however many share the port. The collector reads the stage and job
stores, so it lives with the admin API (``mvi_node.admin.collector``): this package
stays a ground floor that any stage may import.
"""

from mvi_node.metrics.registry import (
    EXAMS_SKIPPED,
    GPU_MEMORY,
    INFERENCE_DEVICE,
    MODEL_INFO,
    PREDICTED_PROBABILITY,
    PURGED,
    RESULTS_FAILED,
    RESULTS_SENT,
    SERIES_SELECTED,
    STAGE_SECONDS,
    STAGES,
    observe_stage,
    record_stage,
)

__all__ = [
    "EXAMS_SKIPPED",
    "GPU_MEMORY",
    "INFERENCE_DEVICE",
    "MODEL_INFO",
    "PREDICTED_PROBABILITY",
    "PURGED",
    "RESULTS_FAILED",
    "RESULTS_SENT",
    "SERIES_SELECTED",
    "STAGES",
    "STAGE_SECONDS",
    "observe_stage",
    "record_stage",
]
