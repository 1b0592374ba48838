"""Training and evaluation measures shared by every recipe (numpy only, nothing else of
mvi_node): discrimination (AUC with DeLong CI, Youden threshold, sensitivity /
specificity / accuracy, one-vs-rest AUC for a multi-class grade), calibration (Brier,
ECE, reliability bins, intercept / slope, Platt scaling), decision curves, and the
model-card writer."""

from mvi_node.evaluation.calibration import (brier_score, calibration_intercept_slope, calibration_metrics,
                                             decision_curve, expected_calibration_error, logit, platt_apply,
                                             platt_fit, reliability_bins)
from mvi_node.evaluation.card import calibration_table, is_synthetic, metrics_table, model_card
from mvi_node.evaluation.metrics import (auc_ci, auc_delong, confusion, metrics_at, multiclass_metrics,
                                         one_vs_rest_auc, youden_threshold)

__all__ = [
    "auc_ci", "auc_delong", "brier_score", "calibration_intercept_slope", "calibration_metrics",
    "calibration_table", "confusion", "decision_curve", "expected_calibration_error", "is_synthetic", "logit",
    "metrics_at", "metrics_table", "model_card", "multiclass_metrics", "one_vs_rest_auc", "platt_apply",
    "platt_fit", "reliability_bins", "youden_threshold",
]
