"""Seed 000's end-to-end evaluation through the served path. The metrics themselves
(AUC with DeLong CI, Youden threshold, sensitivity / specificity / accuracy, calibration)
live in :mod:`mvi_node.evaluation`, shared by every recipe."""

from __future__ import annotations

import numpy as np


def end_to_end(data: str, model_root: str, clinical: bool = True) -> dict:
    """Score a synth folder through the served path: DICOM -> selection -> ROI from the
    exam's own annotation (not the truth mask) -> ONNX Runtime; per variant metrics at the
    manifest threshold (with calibration), and every outcome that was not "ok" counted.

    ``python -c "from mvi_node.recipes.ct_ap_resnet18.evaluate import end_to_end as e;
    print(e('DATA', 'models'))"``
    """
    import json
    from pathlib import Path

    from mvi_node.clinical import open_source
    from mvi_node.evaluation import calibration_metrics, metrics_at  # scikit-learn: not at import time
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
        out[variant] = {**metrics_at(y, s, float(t[0])), **calibration_metrics(y, s)}
    return out
