"""Calibration of predicted probabilities, numpy only: Brier score, calibration intercept
and slope (logistic recalibration, Van Calster et al., J Clin Epidemiol 2016), expected
calibration error and reliability-diagram bins; Platt scaling (Platt 1999) to recalibrate
the probability shown to a radiologist; decision curves (Vickers & Elkin, Med Decis
Making 2006).

The logistic fits are Newton-Raphson (IRLS) on one or two parameters: no scipy or
scikit-learn needed. A fit whose maximum-likelihood estimate does not exist (separable
data, one class only) gives ``nan`` rather than a huge number.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

#: probabilities are clipped to [EPS, 1 - EPS] before taking their logit
EPS = 1e-6


def _binary(labels: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(bool).astype(float)
    p = np.asarray(probs, float)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError("labels and probabilities must be 1-D and the same length")
    if len(y) == 0:
        raise ValueError("no cases")
    return y, p


def _check_probabilities(p: np.ndarray) -> None:
    if np.any(~np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("probabilities must lie in [0, 1]")


def logit(p: Any) -> np.ndarray:
    p = np.clip(np.asarray(p, float), EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _logistic_fit(x: np.ndarray, y: np.ndarray, offset: np.ndarray | None = None,
                  max_iter: int = 100, tol: float = 1e-10) -> np.ndarray | None:
    """Maximum-likelihood coefficients of ``P(y) = sigmoid(x @ beta + offset)``; ``y`` may
    be soft targets in [0, 1]. None when the fit does not converge (no finite MLE)."""
    off = np.zeros(len(y)) if offset is None else offset
    beta = np.zeros(x.shape[1])

    def nll(b: np.ndarray) -> float:
        eta = x @ b + off
        return float(np.sum(np.logaddexp(0.0, eta) - y * eta))

    current = nll(beta)
    for _ in range(max_iter):
        mu = _sigmoid(x @ beta + off)
        w = mu * (1.0 - mu)
        grad = x.T @ (y - mu)
        hess = (x * w[:, None]).T @ x
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            return None
        if not np.all(np.isfinite(step)):
            return None
        scale = 1.0
        while scale > 1e-8:  # step halving keeps every iteration downhill
            candidate = beta + scale * step
            value = nll(candidate)
            if value <= current + 1e-12:
                break
            scale *= 0.5
        else:
            return None
        beta, current = candidate, value
        if np.max(np.abs(scale * step)) < tol * (1.0 + np.max(np.abs(beta))):
            return beta if np.all(np.abs(beta) < 1e6) else None
    return None


def brier_score(labels: Any, probs: Any) -> float:
    """Mean squared difference between probability and outcome (0 is perfect)."""
    y, p = _binary(labels, probs)
    _check_probabilities(p)
    return float(np.mean((p - y) ** 2))


def calibration_intercept_slope(labels: Any, probs: Any) -> tuple[float, float]:
    """(intercept, slope) of logistic recalibration on the logit of ``probs``.

    Slope: ``b`` in ``logit P(y) = a + b * logit(p)`` (1 is ideal; < 1 means predictions
    too extreme). Intercept (calibration in the large): ``a`` in
    ``logit P(y) = a + logit(p)`` with the slope fixed at 1 (0 is ideal; > 0 means risks
    underestimated). ``nan`` where the fit has no finite solution.
    """
    y, p = _binary(labels, probs)
    _check_probabilities(p)
    lp = logit(p)
    ones = np.ones((len(y), 1))
    a = _logistic_fit(ones, y, offset=lp)
    ab = _logistic_fit(np.column_stack([ones[:, 0], lp]), y)
    return (float(a[0]) if a is not None else float("nan"),
            float(ab[1]) if ab is not None else float("nan"))


def _bin_index(p: np.ndarray, bins: int) -> np.ndarray:
    if bins < 1:
        raise ValueError("need at least one bin")
    return np.minimum((p * bins).astype(int), bins - 1)


def reliability_bins(labels: Any, probs: Any, bins: int = 10) -> dict[str, list]:
    """Reliability-diagram data on ``bins`` equal-width bins of [0, 1] (a probability of
    exactly 1 falls in the last): per bin its edges, case count, mean predicted
    probability and observed positive rate (``nan`` for an empty bin)."""
    y, p = _binary(labels, probs)
    _check_probabilities(p)
    idx = _bin_index(p, bins)
    count = np.bincount(idx, minlength=bins)
    sum_p = np.bincount(idx, weights=p, minlength=bins)
    sum_y = np.bincount(idx, weights=y, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(count > 0, sum_p / count, np.nan)
        rate = np.where(count > 0, sum_y / count, np.nan)
    edges = np.linspace(0.0, 1.0, bins + 1)
    return {"low": [float(v) for v in edges[:-1]], "high": [float(v) for v in edges[1:]],
            "count": [int(v) for v in count], "mean_predicted": [float(v) for v in mean_p],
            "observed_rate": [float(v) for v in rate]}


def expected_calibration_error(labels: Any, probs: Any, bins: int = 10) -> float:
    """Sum over equal-width bins of (bin share of cases) x |mean predicted - observed rate|."""
    r = reliability_bins(labels, probs, bins)
    n = sum(r["count"])
    return float(sum(c / n * abs(m - o) for c, m, o in zip(r["count"], r["mean_predicted"], r["observed_rate"])
                     if c))


def calibration_metrics(labels: Any, probs: Any, bins: int = 10) -> dict[str, Any]:
    """What a manifest stores beside the discrimination metrics: Brier score, ECE (with
    its bin count), calibration intercept and slope, rounded to 4 decimals."""
    intercept, slope = calibration_intercept_slope(labels, probs)
    return {
        "brier": round(brier_score(labels, probs), 4),
        "ece": round(expected_calibration_error(labels, probs, bins), 4), "ece_bins": int(bins),
        "calibration_intercept": round(intercept, 4) if intercept == intercept else intercept,
        "calibration_slope": round(slope, 4) if slope == slope else slope,
    }


def platt_fit(labels: Any, scores: Any, *, on_logit: bool = True) -> tuple[float, float]:
    """Platt scaling: (a, b) such that ``platt_apply(scores, a, b)`` =
    ``sigmoid(a * x + b)`` is calibrated, ``x`` being ``logit(scores)`` (``on_logit``,
    for probabilities) or the raw score. Fitted on Platt's smoothed targets
    ((N+ + 1) / (N+ + 2) and 1 / (N- + 2)), so it is finite even on separable data.
    Plain floats, for a manifest. Fit on data the model did not learn from (validation)."""
    y, s = _binary(labels, scores)
    if on_logit:
        _check_probabilities(s)
    x = logit(s) if on_logit else s
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    target = np.where(y > 0, (n_pos + 1) / (n_pos + 2), 1.0 / (n_neg + 2))
    beta = _logistic_fit(np.column_stack([x, np.ones(len(y))]), target)
    if beta is None:
        raise ValueError("Platt scaling did not converge")
    return float(beta[0]), float(beta[1])


def platt_apply(scores: Any, a: float, b: float, *, on_logit: bool = True) -> np.ndarray:
    """Recalibrated probabilities ``sigmoid(a * x + b)`` (see :func:`platt_fit`)."""
    s = np.asarray(scores, float)
    x = logit(s) if on_logit else s
    return _sigmoid(a * x + b)


def decision_curve(labels: Any, scores: Any, thresholds: Sequence[float]) -> dict[str, list[float]]:
    """Net benefit at each threshold probability ``pt`` (a case is treated when
    ``score >= pt``): model ``TP/N - FP/N * pt/(1-pt)``, treat-all
    ``prevalence - (1 - prevalence) * pt/(1-pt)``, treat-none 0."""
    y, s = _binary(labels, scores)
    y = y.astype(bool)
    n, prevalence = len(y), float(y.mean())
    out: dict[str, list[float]] = {"thresholds": [], "net_benefit": [], "treat_all": [], "treat_none": []}
    for pt in thresholds:
        pt = float(pt)
        if not 0.0 <= pt < 1.0 or math.isnan(pt):
            raise ValueError(f"threshold probability must be in [0, 1), not {pt}")
        odds = pt / (1.0 - pt)
        treat = s >= pt
        tp, fp = int((treat & y).sum()), int((treat & ~y).sum())
        out["thresholds"].append(pt)
        out["net_benefit"].append(tp / n - fp / n * odds)
        out["treat_all"].append(prevalence - (1.0 - prevalence) * odds)
        out["treat_none"].append(0.0)
    return out
