"""What every recipe's trainer does the same way: tell a synthetic cohort, and Platt-
calibrate on the validation split as the node serves it (``mvi_node.infer.calibration``)."""

from __future__ import annotations

from typing import Any

import numpy as np

#: fewer validation exams than this (or one class only): no calibration, the graph's own
#: probabilities are served and the SR says nothing about calibration
MIN_CALIBRATION_EXAMS = 10


def synthetic_cohort(cohort: dict[str, Any]) -> bool:
    """True when both the training cohort and its test cohort are generated phantoms."""
    return cohort.get("kind") == "synth" and cohort.get("test_cohort", {}).get("kind", "synth") == "synth"


def platt_on_validation(labels: Any, scores: Any, cohort: dict[str, Any], **table_extra: str):
    """(Calibration, manifest table) fitted on the validation split's labels and served
    scores, or (None, None) when the split is too small, holds one class, or the fit is
    not finite. ``table_extra`` adds words to the manifest table (what it applies to)."""
    from mvi_node.evaluation import platt_fit
    from mvi_node.infer.calibration import Calibration

    labels, scores = np.asarray(labels), np.asarray(scores)
    if len(labels) < MIN_CALIBRATION_EXAMS or not 0 < labels.sum() < len(labels):
        return None, None
    a, b = platt_fit(labels, scores, on_logit=True)
    if not (np.isfinite(a) and np.isfinite(b)):
        return None, None
    table = {"method": "platt", "a": float(a), "b": float(b), "on_logit": True,
             "fitted_on": f"the validation split ({len(labels)} exams) of {cohort.get('source', 'the training cohort')}",
             **table_extra}
    return Calibration.from_manifest(table, "validation"), table
