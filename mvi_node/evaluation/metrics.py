"""Discrimination metrics, numpy only: AUC with DeLong variance and 95% CI, Youden's J
threshold, sensitivity / specificity / accuracy at a threshold (DeLong et al., Biometrics
1988; the fast midrank form of Sun & Xu, IEEE SPL 2014), and one-vs-rest AUC for a
multi-class endpoint such as the MVI grade M0 / M1 / M2.

Binary labels are anything ``bool`` accepts (1 / True = positive); a case is predicted
positive when its score is ``>= threshold``.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Sequence

import numpy as np

#: two-sided 95% normal quantile (kept as a literal so stored CIs reproduce bit for bit)
_Z95 = 1.959963984540054


def _midrank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x))
    i = 0
    while i < len(x):
        j = i
        while j < len(x) and xs[j] == xs[i]:
            j += 1
        ranks[i:j] = 0.5 * (i + j - 1) + 1
        i = j
    out = np.empty(len(x))
    out[order] = ranks
    return out


def auc_delong(labels: Any, scores: Any) -> tuple[float, float]:
    """(AUC, DeLong variance). The AUC is the Mann-Whitney statistic (ties count one
    half); the variance is ``nan`` with fewer than two cases of either class.
    Raises ``ValueError`` when one class is missing."""
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, float)
    pos, neg = scores[labels], scores[~labels]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        raise ValueError("AUC needs both classes")
    tx, ty, tz = _midrank(pos), _midrank(neg), _midrank(np.concatenate([pos, neg]))
    auc = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
    v01 = (tz[:m] - tx) / n
    v10 = 1.0 - (tz[m:] - ty) / m
    var = np.var(v01, ddof=1) / m + np.var(v10, ddof=1) / n if m > 1 and n > 1 else float("nan")
    return float(auc), float(var)


def auc_ci(labels: Any, scores: Any, level: float = 0.95) -> tuple[float, float, float]:
    """(AUC, low, high): normal interval on the DeLong variance, clipped to 0..1; the
    whole 0..1 when the variance is undefined (fewer than two cases of a class)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), not {level}")
    auc, var = auc_delong(labels, scores)
    z = _Z95 if level == 0.95 else NormalDist().inv_cdf(0.5 + level / 2)
    half = z * math.sqrt(var) if var == var else float("nan")
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def youden_threshold(labels: Any, scores: Any) -> float:
    """Score threshold (predict positive when score >= t) maximising sens + spec - 1;
    the lowest such observed score on ties."""
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, float)
    best_t, best_j = 0.5, -1.0
    for t in np.unique(scores):
        pred = scores >= t
        sens = (pred & labels).sum() / max(labels.sum(), 1)
        spec = (~pred & ~labels).sum() / max((~labels).sum(), 1)
        if sens + spec - 1 > best_j:
            best_j, best_t = sens + spec - 1, float(t)
    return best_t


def confusion(labels: Any, scores: Any, threshold: float) -> dict[str, int]:
    """True/false positives/negatives when ``score >= threshold`` is called positive."""
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, float)
    pred = scores >= threshold
    return {"tp": int((pred & labels).sum()), "fp": int((pred & ~labels).sum()),
            "tn": int((~pred & ~labels).sum()), "fn": int((~pred & labels).sum())}


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
    matrix = np.zeros((k, k), dtype=int)
    np.add.at(matrix, (idx, pred), 1)
    return {
        "classes": names, "per_class": per_class, "auc_ci_method": "DeLong, one-vs-rest",
        "macro_auc": round(float(np.mean(aucs)), 4) if aucs else float("nan"),
        "accuracy": round(float((pred == idx).mean()), 4) if len(idx) else float("nan"),
        "confusion": matrix.tolist(), "patients": int(len(idx)),
    }
