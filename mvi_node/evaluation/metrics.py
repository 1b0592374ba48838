"""Discrimination metrics: AUC with DeLong variance and 95% CI, the paired DeLong test of
two AUCs on the same cases (DeLong et al., Biometrics 1988; the fast midrank form of Sun &
Xu, IEEE SPL 2014), Youden's J threshold, sensitivity / specificity / accuracy / PPV / NPV
at a threshold, and one-vs-rest AUC for a multi-class endpoint such as the MVI grade
M0 / M1 / M2.

DeLong is written here (no library has it), on SciPy's midranks and normal distribution;
the ROC curve and the confusion counts come from scikit-learn.

Binary labels are anything ``bool`` accepts (1 / True = positive); a case is predicted
positive when its score is ``>= threshold``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy.stats import norm, rankdata
from sklearn.metrics import confusion_matrix, roc_curve

#: two-sided 95% normal quantile (kept as a literal so stored CIs reproduce bit for bit)
_Z95 = 1.959963984540054


def _components(pos: np.ndarray, neg: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(AUC, per-positive and per-negative structural components) from midranks."""
    m, n = len(pos), len(neg)
    tx, ty, tz = rankdata(pos), rankdata(neg), rankdata(np.concatenate([pos, neg]))
    auc = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
    v01 = (tz[:m] - tx) / n
    v10 = 1.0 - (tz[m:] - ty) / m
    return float(auc), v01, v10


def _split(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, float)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError("labels and scores must be 1-D and the same length")
    return labels, scores[labels], scores[~labels]


def auc_delong(labels: Any, scores: Any) -> tuple[float, float]:
    """(AUC, DeLong variance). The AUC is the Mann-Whitney statistic (ties count one
    half); the variance is ``nan`` with fewer than two cases of either class.
    Raises ``ValueError`` when one class is missing."""
    _, pos, neg = _split(labels, scores)
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        raise ValueError("AUC needs both classes")
    auc, v01, v10 = _components(pos, neg)
    var = np.var(v01, ddof=1) / m + np.var(v10, ddof=1) / n if m > 1 and n > 1 else float("nan")
    return auc, float(var)


def auc_ci(labels: Any, scores: Any, level: float = 0.95) -> tuple[float, float, float]:
    """(AUC, low, high): normal interval on the DeLong variance, clipped to 0..1; the
    whole 0..1 when the variance is undefined (fewer than two cases of a class)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), not {level}")
    auc, var = auc_delong(labels, scores)
    z = _Z95 if level == 0.95 else float(norm.ppf(0.5 + level / 2))
    half = z * math.sqrt(var) if var == var else float("nan")
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def delong_paired(labels: Any, scores_a: Any, scores_b: Any, level: float = 0.95) -> dict[str, Any]:
    """Paired DeLong test of two AUCs on the same cases (two models, one cohort).

    Returns ``auc_a``, ``auc_b``, ``difference`` (a - b), ``z``, the two-sided
    ``p_value`` and ``ci``: the ``level`` normal interval of the difference, clipped to
    -1..1. Identical scores (no variance of the difference) give z = 0 and p = 1.
    Raises ``ValueError`` when a class is missing or has fewer than two cases."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), not {level}")
    labels, pos_a, neg_a = _split(labels, scores_a)
    _, pos_b, neg_b = _split(labels, scores_b)
    m, n = len(pos_a), len(neg_a)
    if m < 2 or n < 2:
        raise ValueError("the paired DeLong test needs at least two cases of each class")
    auc_a, v01_a, v10_a = _components(pos_a, neg_a)
    auc_b, v01_b, v10_b = _components(pos_b, neg_b)
    s01, s10 = np.cov(np.vstack([v01_a, v01_b])), np.cov(np.vstack([v10_a, v10_b]))
    cov = s01 / m + s10 / n
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    diff = auc_a - auc_b
    if var <= 1e-15:  # the two score sets rank the cases alike
        z = 0.0 if abs(diff) < 1e-12 else math.copysign(math.inf, diff)
        half = 0.0
    else:
        z = diff / math.sqrt(var)
        half = (_Z95 if level == 0.95 else float(norm.ppf(0.5 + level / 2))) * math.sqrt(var)
    return {"auc_a": auc_a, "auc_b": auc_b, "difference": diff, "z": float(z),
            "p_value": float(min(1.0, 2.0 * norm.sf(abs(z)))), "ci": [max(-1.0, diff - half), min(1.0, diff + half)],
            "variance": var, "method": "DeLong, paired"}


def youden_threshold(labels: Any, scores: Any) -> float:
    """Score threshold (predict positive when score >= t) maximising sens + spec - 1;
    the lowest such observed score on ties. With one class only: the highest score (no
    positives) or the lowest (no negatives)."""
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, float)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float(scores.max() if n_pos == 0 else scores.min())
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    # J * n_pos * n_neg in integers, so ties are exact; roc_curve's first threshold is +inf
    j = np.rint(tpr * n_pos).astype(np.int64) * n_neg - np.rint(fpr * n_neg).astype(np.int64) * n_pos
    j[~np.isfinite(thresholds)] = np.iinfo(np.int64).min
    best = np.flatnonzero(j == j.max())[-1]  # thresholds decrease: the last is the lowest
    return float(thresholds[best])


def confusion(labels: Any, scores: Any, threshold: float) -> dict[str, int]:
    """True/false positives/negatives when ``score >= threshold`` is called positive."""
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, float)
    tn, fp, fn, tp = confusion_matrix(labels, scores >= threshold, labels=[False, True]).ravel()
    return {"tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)}


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def at_threshold(labels: Any, scores: Any, threshold: float) -> dict[str, Any]:
    """Operating point at ``threshold`` (``score >= threshold`` is positive): threshold,
    sensitivity, specificity, accuracy, PPV, NPV (``None`` where the denominator is 0)
    and the counts tp, fp, tn, fn. Unrounded."""
    labels = np.asarray(labels).astype(bool)
    c = confusion(labels, scores, threshold)
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    return {"threshold": float(threshold), "sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
            "accuracy": _ratio(tp + tn, len(labels)), "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn),
            "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def metrics_at(labels: Any, scores: Any, threshold: float) -> dict[str, Any]:
    """AUC (95% CI, DeLong), sensitivity, specificity, accuracy at ``threshold``; the
    number of patients and of positives. Values rounded to 4 decimals (what a manifest
    stores). Raises ``ValueError`` when one class is missing (no AUC)."""
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, float)
    auc, lo, hi = auc_ci(labels, scores)
    c = confusion(labels, scores, threshold)
    return {
        "auc": round(auc, 4), "auc_ci95": [round(lo, 4), round(hi, 4)], "auc_ci_method": "DeLong",
        "sensitivity": round(c["tp"] / max(int(labels.sum()), 1), 4),
        "specificity": round(c["tn"] / max(int((~labels).sum()), 1), 4),
        "accuracy": round((c["tp"] + c["tn"]) / len(labels), 4), "threshold": float(threshold),
        "patients": int(len(labels)), "positives": int(labels.sum()),
    }


def _class_indices(labels: Any, classes: Sequence[str] | None, k: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype.kind in "iub":
        idx = labels.astype(int)
    else:
        if classes is None:
            raise ValueError("class-name labels need `classes`")
        pos = {str(c): i for i, c in enumerate(classes)}
        try:
            idx = np.array([pos[str(v)] for v in labels], dtype=int)
        except KeyError as e:
            raise ValueError(f"label {e.args[0]!r} is not one of {list(classes)}") from None
    if len(idx) and (idx.min() < 0 or idx.max() >= k):
        raise ValueError(f"class index out of range 0..{k - 1}")
    return idx


def one_vs_rest_auc(labels: Any, probabilities: Any, classes: Sequence[str] | None = None) -> np.ndarray:
    """Per class, the AUC of its probability column for "this class vs the rest";
    ``nan`` for a class that is absent or is every case. ``labels``: class indices
    0..K-1, or class names from ``classes``; ``probabilities``: (N, K)."""
    probs = np.asarray(probabilities, float)
    if probs.ndim != 2:
        raise ValueError("probabilities must be (cases, classes)")
    idx = _class_indices(labels, classes, probs.shape[1])
    out = np.full(probs.shape[1], np.nan)
    for k in range(probs.shape[1]):
        y = idx == k
        if 0 < y.sum() < len(y):
            out[k] = auc_delong(y, probs[:, k])[0]
    return out


def multiclass_metrics(labels: Any, probabilities: Any, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Multi-class endpoint (e.g. MVI grade M0 / M1 / M2): per class one-vs-rest AUC with
    DeLong 95% CI and its count, macro AUC (mean over the classes that have an AUC),
    accuracy of the arg-max class, and the confusion matrix (rows true, columns predicted).
    Values rounded to 4 decimals; a class without an AUC gets ``nan``."""
    probs = np.asarray(probabilities, float)
    if probs.ndim != 2:
        raise ValueError("probabilities must be (cases, classes)")
    k = probs.shape[1]
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for {k} probability columns")
    idx = _class_indices(labels, classes, k)
    pred = probs.argmax(axis=1)
    per_class: dict[str, Any] = {}
    aucs = []
    for i, name in enumerate(names):
        y = idx == i
        entry: dict[str, Any] = {"cases": int(y.sum())}
        if 0 < y.sum() < len(y):
            auc, lo, hi = auc_ci(y, probs[:, i])
            aucs.append(auc)
            entry.update(auc=round(auc, 4), auc_ci95=[round(lo, 4), round(hi, 4)])
        else:
            entry.update(auc=float("nan"), auc_ci95=[float("nan"), float("nan")])
        per_class[name] = entry
    matrix = confusion_matrix(idx, pred, labels=list(range(k))) if len(idx) else np.zeros((k, k), dtype=int)
    return {
        "classes": names, "per_class": per_class, "auc_ci_method": "DeLong, one-vs-rest",
        "macro_auc": round(float(np.mean(aucs)), 4) if aucs else float("nan"),
        "accuracy": round(float((pred == idx).mean()), 4) if len(idx) else float("nan"),
        "confusion": matrix.tolist(), "patients": int(len(idx)),
    }
