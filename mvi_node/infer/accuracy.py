"""The accuracy check a reduced-precision graph must pass before the node serves it.

Both graphs see the same prepared inputs of every validation exam (prepared once by the
serving path, then predicted with the fp32 graph and with the copy), so what differs is
the arithmetic only. Recipe-neutral: it reads :class:`~mvi_node.infer.recipe.Prediction`
values (served, calibrated probabilities and their key slices' explanation maps) and,
for a segmentation recipe, label maps.

Classification, all must hold (:data:`CLASSIFICATION_TOLERANCES`):

- ROC AUC on the validation labels within ``auc`` (0.01) of fp32's;
- every exam's patient probability within ``probability`` (0.02 absolute) of fp32's;
- Grad-CAM: Pearson correlation with fp32's map on every key slice, the mean over all
  slices at least ``gradcam`` (0.95). The lowest slice is reported, not judged: fp32's own
  maps of a few slices fall to r ~ 0 when the image moves by one grey level (measured
  on 24 validation exams: mean 0.966, probabilities within 0.015), so a per-slice floor
  would refuse any copy.

Segmentation (:data:`SEGMENTATION_TOLERANCES`): Dice against the fp32 masks, liver on
every exam at least 0.97, tumour (any lesion) at least 0.90 on average over the exams
where either finds one.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

CLASSIFICATION_TOLERANCES = {"auc": 0.01, "probability": 0.02, "gradcam": 0.95}
SEGMENTATION_TOLERANCES = {"liver_dice_min": 0.97, "tumour_dice_mean": 0.90}
MIN_EXAMS = 10


def correlation(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Pearson r of two maps; two flat maps are identical (1.0), one flat map 0.0."""
    if a is None or b is None:
        return 1.0 if a is None and b is None else 0.0
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if x.shape != y.shape:
        return 0.0
    sx, sy = x.std(), y.std()
    if sx < 1e-9 or sy < 1e-9:
        return 1.0 if sx < 1e-9 and sy < 1e-9 and np.allclose(x, y, atol=1e-3) else 0.0
    return float(np.mean((x - x.mean()) * (y - y.mean())) / (sx * sy))


def auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """ROC AUC (Mann-Whitney, ties half); nan when a class is missing."""
    y, s = np.asarray(labels, int), np.asarray(scores, float)
    pos, neg = s[y == 1], s[y == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def _slices(pred) -> list:
    return [k for f in pred.findings for k in f.key_slices]


def check_predictions(pairs: Iterable[tuple[int | None, Any, Any]],
                      tolerances: dict[str, float] | None = None) -> dict[str, Any]:
    """``pairs``: (label or None, fp32 Prediction, candidate Prediction) per exam -> the
    manifest's ``check`` table: figures, tolerances, ``passed`` and ``failures``."""
    tol = {**CLASSIFICATION_TOLERANCES, **(tolerances or {})}
    labels, ref, cand, deltas, corrs, changed = [], [], [], [], [], 0
    for label, a, b in pairs:
        deltas.append(abs(float(a.probability) - float(b.probability)))
        changed += bool(a.decision) != bool(b.decision)
        if label is not None:
            labels.append(int(label))
            ref.append(float(a.probability))
            cand.append(float(b.probability))
        sa, sb = _slices(a), _slices(b)
        if [k.sop_instance_uid for k in sa] != [k.sop_instance_uid for k in sb]:
            corrs.append(0.0)  # a different slice set is a different explanation
            continue
        corrs += [correlation(x.explanation, y.explanation) for x, y in zip(sa, sb)]
    auc_ref, auc_cand = auc(labels, ref), auc(labels, cand)
    out: dict[str, Any] = {
        "exams": len(deltas), "labelled_exams": len(labels), "positives": int(sum(labels)),
        "auc_fp32": round(auc_ref, 4), "auc": round(auc_cand, 4), "auc_delta": round(abs(auc_cand - auc_ref), 4),
        "probability_delta_max": round(max(deltas, default=0.0), 4),
        "probability_delta_median": round(float(np.median(deltas)) if deltas else 0.0, 4),
        "decisions_changed": changed, "gradcam_slices": len(corrs),
        "gradcam_correlation_mean": round(float(np.mean(corrs)) if corrs else 1.0, 4),
        "gradcam_correlation_min": round(min(corrs, default=1.0), 4),
        "tolerances": {"auc_delta_max": tol["auc"], "probability_delta_max": tol["probability"],
                       "gradcam_correlation_mean_min": tol["gradcam"]},
    }
    failures = []
    if len(deltas) < MIN_EXAMS:
        failures.append(f"{len(deltas)} exams evaluated, need {MIN_EXAMS}")
    if math.isnan(auc_ref) or math.isnan(auc_cand):
        failures.append("AUC undefined: the validation exams need both classes")
    elif abs(auc_cand - auc_ref) > tol["auc"]:
        failures.append(f"AUC {auc_cand:.4f} vs fp32 {auc_ref:.4f}")
    if out["probability_delta_max"] > tol["probability"]:
        failures.append(f"probability differs by up to {out['probability_delta_max']}")
    if out["gradcam_correlation_mean"] < tol["gradcam"]:
        failures.append(f"Grad-CAM correlation {out['gradcam_correlation_mean']} on average")
    out["passed"] = not failures
    out["failures"] = failures
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float | None:
    """Dice of two boolean masks; None when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return None if total == 0 else 2.0 * int((a & b).sum()) / total


def check_segmentations(pairs: Iterable[tuple[Any, Any]], tolerances: dict[str, float] | None = None) -> dict[str, Any]:
    """``pairs``: (fp32 Segmentation, candidate Segmentation) per exam -> the ``check`` table."""
    tol = {**SEGMENTATION_TOLERANCES, **(tolerances or {})}
    liver, tumour, lesions_same, n = [], [], 0, 0
    for a, b in pairs:
        n += 1
        d = dice(a.liver, b.liver)
        liver.append(1.0 if d is None else d)
        t = dice(a.lesion_map > 0, b.lesion_map > 0)
        if t is not None:
            tumour.append(t)
        lesions_same += len(a.lesions) == len(b.lesions)
    out: dict[str, Any] = {
        "exams": n, "liver_dice_min": round(min(liver, default=1.0), 4),
        "liver_dice_mean": round(float(np.mean(liver)) if liver else 1.0, 4),
        "tumour_exams": len(tumour), "tumour_dice_mean": round(float(np.mean(tumour)) if tumour else 1.0, 4),
        "tumour_dice_min": round(min(tumour, default=1.0), 4), "same_lesion_count": lesions_same,
        "tolerances": {"liver_dice_min": tol["liver_dice_min"], "tumour_dice_mean_min": tol["tumour_dice_mean"]},
    }
    failures = []
    if n < MIN_EXAMS:
        failures.append(f"{n} exams segmented, need {MIN_EXAMS}")
    if out["liver_dice_min"] < tol["liver_dice_min"]:
        failures.append(f"liver Dice down to {out['liver_dice_min']}")
    if out["tumour_dice_mean"] < tol["tumour_dice_mean"]:
        failures.append(f"tumour Dice {out['tumour_dice_mean']} on average")
    out["passed"] = not failures
    out["failures"] = failures
    return out
