"""Patient-level metrics of seed 000, numpy only: AUC with DeLong 95% CI, Youden's J
threshold, sensitivity, specificity, accuracy (DeLong et al., Biometrics 1988; the fast
midrank form of Sun & Xu, IEEE SPL 2014)."""

from __future__ import annotations

import math

import numpy as np


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


def auc_delong(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(AUC, DeLong variance)."""
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


def auc_ci(labels: np.ndarray, scores: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(AUC, low, high): normal interval on the DeLong variance, clipped to 0..1."""
    auc, var = auc_delong(labels, scores)
    z = {0.95: 1.959963984540054}.get(level, 1.959963984540054)
    half = z * math.sqrt(var) if var == var else float("nan")
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """Score threshold (predict positive when score >= t) maximising sens + spec - 1."""
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, float)
    best_t, best_j = 0.5, -1.0
    for t in np.unique(scores):
        pred = scores >= t
        sens = (pred & labels).sum() / max(labels.sum(), 1)
        spec = (~pred & ~labels).sum() / max((~labels).sum(), 1)
        if sens + spec - 1 > best_j:
            best_j, best_t = sens + spec - 1, float(t)
    return best_t


def metrics_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """AUC (95% CI), sensitivity, specificity, accuracy at ``threshold``; counts."""
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, float)
    pred = scores >= threshold
    auc, lo, hi = auc_ci(labels, scores)
    tp, tn = int((pred & labels).sum()), int((~pred & ~labels).sum())
    return {
        "auc": round(auc, 4), "auc_ci95": [round(lo, 4), round(hi, 4)], "auc_ci_method": "DeLong",
        "sensitivity": round(tp / max(int(labels.sum()), 1), 4),
        "specificity": round(tn / max(int((~labels).sum()), 1), 4),
        "accuracy": round((tp + tn) / len(labels), 4), "threshold": float(threshold),
        "patients": int(len(labels)), "positives": int(labels.sum()),
    }


def end_to_end(data: str, model_root: str, clinical: bool = True) -> dict:
    """Score a synth folder through the served path: DICOM -> selection -> ROI from the
    exam's own annotation (not the truth mask) -> ONNX Runtime; per variant metrics at the
    manifest threshold, and every outcome that was not "ok" counted.

    ``python -c "from mvi_node.recipes.ct_ap_resnet18.evaluate import end_to_end as e;
    print(e('DATA', 'models'))"``
    """
    import json
    from pathlib import Path

    from mvi_node.clinical import open_source
    from mvi_node.infer import Engine, ModelRegistry, infer_path

    root = Path(data)
    studies = json.loads((root / "manifest.json").read_text())["studies"]
    truth = {s["patient_id"]: bool(s["mvi"]) for s in studies}
    arterial = {s["patient_id"]: s.get("recipes", {}).get("ct_ap_resnet18", {}).get("ct_arterial") for s in studies}
    engine = Engine(ModelRegistry([Path(model_root)]), open_source(root / "clinical" if clinical else None))
    records = [r for r in infer_path(root / "dicom", engine)["studies"] if r.recipe == "ct_ap_resnet18"]
    out: dict = {"outcomes": {}, "series_as_manifest": 0}
    by_variant: dict[str, list] = {}
    for r in records:
        out["outcomes"][r.outcome] = out["outcomes"].get(r.outcome, 0) + 1
        out["series_as_manifest"] += int(r.series_instance_uid == arterial.get(r.patient_id))
        if r.outcome == "ok":
            by_variant.setdefault(r.model["variant"], []).append((truth[r.patient_id], r.probability, r.threshold))
    for variant, rows in by_variant.items():
        y, s, t = (np.array(v) for v in zip(*rows))
        out[variant] = metrics_at(y, s, float(t[0]))
    return out
