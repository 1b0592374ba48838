"""Training and evaluation measures shared by every recipe (numpy, SciPy, scikit-learn and
matplotlib; nothing else of mvi_node): discrimination (AUC with DeLong CI, the paired
DeLong test, Youden threshold, sensitivity / specificity / accuracy / PPV / NPV, one-vs-rest
AUC for a multi-class grade), calibration (Brier, ECE, reliability bins, intercept / slope,
Platt and isotonic recalibration), decision curves, the model-card writer, and the
evaluation report of a cohort's predictions (``report.evaluate_predictions``)."""

from mvi_node.evaluation.calibration import (brier_score, calibration_intercept_slope, calibration_metrics,
                                             decision_curve, expected_calibration_error, isotonic_apply,
                                             isotonic_fit, logit, platt_apply, platt_fit, reliability_bins)
from mvi_node.evaluation.card import calibration_table, is_synthetic, metrics_table, model_card
from mvi_node.evaluation.metrics import (at_threshold, auc_ci, auc_delong, confusion, delong_paired, metrics_at,
                                         multiclass_metrics, one_vs_rest_auc, youden_threshold)

__all__ = [
    "at_threshold", "auc_ci", "auc_delong", "brier_score", "calibration_intercept_slope", "calibration_metrics",
    "calibration_table", "confusion", "decision_curve", "delong_paired", "expected_calibration_error",
    "is_synthetic", "isotonic_apply", "isotonic_fit", "logit", "metrics_at", "metrics_table", "model_card",
    "multiclass_metrics", "one_vs_rest_auc", "platt_apply", "platt_fit", "reliability_bins", "youden_threshold",
]
