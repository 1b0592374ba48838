"""Calibration of predicted probabilities: Brier score, calibration intercept and slope
(logistic recalibration, Van Calster et al., J Clin Epidemiol 2016), expected calibration
error and reliability-diagram bins; Platt scaling (Platt 1999) and isotonic regression
(Zadrozny & Elkan 2002) to recalibrate the probability shown to a radiologist, each with a
plain-float form a manifest stores; decision curves (Vickers & Elkin, Med Decis Making
2006).

The fits are scikit-learn's unpenalised ``LogisticRegression`` (Newton solver) and
``IsotonicRegression``; calibration in the large (slope fixed at 1, an offset model
scikit-learn has no form for) solves its one-parameter score equation with SciPy's
``brentq``. A fit whose maximum-likelihood estimate does not exist (separable data, one
class only) gives ``nan`` rather than a huge number.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

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
    return expit(x)


def _logistic(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Unpenalised maximum-likelihood logistic regression of ``y`` (0/1) on the columns
    of ``x`` with an intercept: (coefficients, intercept)."""
    model = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-10, max_iter=200)
    model.fit(x, y.astype(int), sample_weight=weights)
    return model.coef_[0].astype(float), float(model.intercept_[0])


def _separated(x: np.ndarray, y: np.ndarray) -> bool:
    """One predictor: no finite MLE when one class lies wholly at or beyond the other
    (complete or quasi-complete separation), when a class is missing, or x is constant."""
    pos, neg = x[y > 0], x[y <= 0]
    if len(pos) == 0 or len(neg) == 0 or np.ptp(x) == 0:
        return True
    return bool(neg.max() <= pos.min() or pos.max() <= neg.min())


def _offset_intercept(y: np.ndarray, offset: np.ndarray) -> float:
    """``a`` in ``logit P(y) = a + offset`` by maximum likelihood: the root of the score
    equation ``sum(sigmoid(a + offset)) = sum(y)`` (monotone in ``a``); nan when every
    case has the same outcome."""
    target = float(y.sum())
    if target <= 0.0 or target >= len(y):
        return float("nan")

    def score(a: float) -> float:
        return float(expit(a + offset).sum()) - target

    lo, hi = -1.0, 1.0
    while score(lo) > 0.0:
        lo *= 2.0
    while score(hi) < 0.0:
        hi *= 2.0
    return float(brentq(score, lo, hi, xtol=1e-12, rtol=1e-12))


def brier_score(labels: Any, probs: Any) -> float:
    """Mean squared difference between probability and outcome (0 is perfect)."""
    y, p = _binary(labels, probs)
    _check_probabilities(p)
    return float(brier_score_loss(y.astype(int), p, pos_label=1))


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
    a = _offset_intercept(y, lp)
    b = float("nan") if _separated(lp, y) else float(_logistic(lp[:, None], y)[0][0])
    return a, b


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
    # soft targets as a weighted pair of hard ones: each case once as 1 (weight t), once as 0 (1 - t)
    coef, intercept = _logistic(np.concatenate([x, x])[:, None], np.concatenate([np.ones(len(y)), np.zeros(len(y))]),
                                np.concatenate([target, 1.0 - target]))
    a, b = float(coef[0]), float(intercept)
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ValueError("Platt scaling did not converge")
    return a, b


def platt_apply(scores: Any, a: float, b: float, *, on_logit: bool = True) -> np.ndarray:
    """Recalibrated probabilities ``sigmoid(a * x + b)`` (see :func:`platt_fit`)."""
    s = np.asarray(scores, float)
    x = logit(s) if on_logit else s
    return _sigmoid(a * x + b)


def isotonic_fit(labels: Any, probs: Any) -> dict[str, list[float]]:
    """Isotonic recalibration (scikit-learn ``IsotonicRegression``, increasing, bounded
    to [0, 1]): the fitted step points as plain float lists ``{"x": [...], "y": [...]}``
    for a manifest; :func:`isotonic_apply` maps a probability through them. Fit on data
    the model did not learn from (validation)."""
    y, p = _binary(labels, probs)
    _check_probabilities(p)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(p, y)
    return {"x": [float(v) for v in iso.X_thresholds_], "y": [float(v) for v in iso.y_thresholds_]}


def isotonic_apply(probs: Any, params: Mapping[str, Sequence[float]]) -> np.ndarray:
    """Recalibrated probabilities from :func:`isotonic_fit`'s points: linear between
    them, held at the end values outside (what ``IsotonicRegression.predict`` does with
    ``out_of_bounds="clip"``)."""
    x, y = np.asarray(params["x"], float), np.asarray(params["y"], float)
    if x.ndim != 1 or x.shape != y.shape or len(x) == 0:
        raise ValueError("isotonic parameters need equal, non-empty 'x' and 'y' lists")
    return np.interp(np.asarray(probs, float), x, y)


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
