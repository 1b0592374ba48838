"""``mvi-node train mr_3seq_grade --data D | --cohort C --out M``: examples -> network ->
ONNX -> calibration -> test -> manifest + card.

The command gives ``args.examples`` (one TrainingExample per usable exam, prepared by
the serving path: selection of the three sequences, the ROI, the MR preprocessing and
the crops) split by patient, and ``args.cohort`` (its description). Training uses the
train split, the threshold, early stop and the Platt calibration of P(MVI) the
validation split; the test split is scored through the exported graph, as served.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from mvi_node.infer.manifest import variant_entry
from mvi_node.recipes.mr_3seq_grade.data import PatientInputs, patient_inputs, training_input
from mvi_node.recipes.mr_3seq_grade.recipe import NAME, VARIANT, preprocessing_constants
from mvi_node.recipes.training import platt_on_validation, synthetic_cohort

__all__ = ["add_arguments", "main", "onnx_probabilities", "training_input"]

INTENDED_USE = ("Research and integration testing of the mvi-node pipeline only. Predicts the microvascular "
                "invasion grade (M0/M1/M2) of hepatocellular carcinoma from DCE-MRI T1 pre-contrast, portal venous "
                "and transitional/delayed phases (Sun et al., WJSO 2022). NOT FOR CLINICAL USE: trained on "
                "synthetic phantoms.")
SITE_INTENDED_USE = ("Research use at the training site only. Predicts the microvascular invasion grade of "
                     "hepatocellular carcinoma from DCE-MRI (Sun et al., WJSO 2022), trained on the site's own cohort. "
                     "NOT FOR CLINICAL USE: not a cleared device.")
TRAINING_DATA = "synthetic MR phantoms (gadoxetate and extracellular agents, four vendor profiles) — not for clinical use"
FILE = "model.onnx"


def onnx_probabilities(path: Path, patients: list[PatientInputs]) -> np.ndarray:
    """(P, 3) class probabilities from the exported graph (what the node serves)."""
    import onnxruntime as ort

    from mvi_node.recipes.mr_3seq_grade.export import INPUT_NAMES

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = []
    for p in patients:
        x = np.asarray(p.grey, np.float32) / 255.0
        out.append(sess.run(["class_probabilities"], {n: x[s][None] for s, n in enumerate(INPUT_NAMES)})[0][0])
    return np.asarray(out).reshape(-1, 3)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Seed 001's training options (``--cohort``/``--data``, ``--test``, ``--out``,
    ``--seed``, ``--version`` and the split fractions are shared by every recipe)."""
    p.add_argument("--epochs", type=int, default=12, help="epochs (early stop on validation AUC of P(MVI))")
    p.add_argument("--combinations-per-patient", type=int, default=1,
                   help="of the 27 slice combinations, how many each patient gives per epoch")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patience", type=int, default=4)
    p.add_argument("--train-size", type=int, default=160, help="crop size of the early epochs (progressive resizing)")
    p.add_argument("--full-size-epochs", type=int, default=2, help="last epochs at the served 320 x 320")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-minutes", type=float, help="wall-clock budget for training")
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (smoke tests)")


def _sets(examples: list[Any]) -> dict[str, list[PatientInputs]]:
    out: dict[str, list[PatientInputs]] = {"train": [], "validation": [], "test": []}
    for e in examples:
        out.setdefault(e.split, []).append(patient_inputs(e))
    return out


def _calibrate(labels: np.ndarray, scores: np.ndarray, cohort: dict[str, Any]):
    return platt_on_validation(labels, scores, cohort, applies_to="P(MVI) = P(M1) + P(M2); P(M1), P(M2) scaled to "
                               "keep their ratio, P(M0) = 1 - P(MVI)")


def grade_table(grades: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Per-grade confusion matrix (rows true M0/M1/M2, columns the most probable grade)."""
    from mvi_node.recipes.mr_3seq_grade.recipe import GRADES

    pred = probs.argmax(1)
    matrix = [[int(((grades == t) & (pred == q)).sum()) for q in range(3)] for t in range(3)]
    return {"classes": list(GRADES), "confusion_rows_true_cols_predicted": json.dumps(matrix),
            "grade_accuracy": round(float((pred == grades).mean()), 4) if len(grades) else None}


def main(args: argparse.Namespace) -> int:
    from mvi_node import evaluation as ev
    from mvi_node.recipes.mr_3seq_grade.card import model_card
    from mvi_node.recipes.mr_3seq_grade.export import OPSET, export_onnx
    from mvi_node.recipes.mr_3seq_grade.train import TrainConfig, fit

    t0 = time.time()
    out = Path(args.out)
    cohort: dict[str, Any] = dict(getattr(args, "cohort", None) or {})
    sets = _sets(list(getattr(args, "examples", None) or []))
    train_set, val_set, test = sets["train"], sets["validation"], sets["test"]
    if not train_set or not val_set:
        print(f"{NAME}: need training and validation exams, have {len(train_set)} and {len(val_set)}", file=sys.stderr)
        return 1

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    cfg = TrainConfig(seed=args.seed, epochs=args.epochs, combinations_per_patient=args.combinations_per_patient,
                      batch=args.batch, lr=args.lr, patience=args.patience, train_size=args.train_size,
                      full_size_epochs=args.full_size_epochs, max_minutes=args.max_minutes,
                      max_steps=args.max_steps)
    log(f"patients: {len(train_set)} training, {len(val_set)} validation, {len(test)} test (split by patient)")
    trained = fit(train_set, val_set, cfg, log=log)
    out.mkdir(parents=True, exist_ok=True)
    path = export_onnx(trained.net, out / FILE)
    val_labels = np.array([p.mvi for p in val_set])
    val_probs = onnx_probabilities(path, val_set)
    calibration, table = _calibrate(val_labels, val_probs[:, 1] + val_probs[:, 2], cohort)
    threshold = float(calibration.apply(trained.threshold)) if calibration else trained.threshold
    metrics: dict[str, Any] = {"validation": trained.validation, "history": json.dumps(trained.history)}
    if test:
        labels = np.array([p.mvi for p in test])
        probs = onnx_probabilities(path, test)
        scores = probs[:, 1] + probs[:, 2]
        if calibration is not None:
            scores = np.asarray(calibration.apply(scores), float)
        if 0 < labels.sum() < len(labels):
            metrics["test"] = {**ev.metrics_at(labels, scores, threshold), **ev.calibration_metrics(labels, scores),
                               **grade_table(np.array([p.grade for p in test]), probs)}
            # sensitivity/specificity at the Youden threshold of the test set itself, for the paper's table
            own = ev.youden_threshold(labels, scores)
            metrics["test_at_own_youden"] = ev.metrics_at(labels, scores, own)
        else:
            metrics["test"] = {"note": "test holds one class only", "patients": len(test)}
    variants = {VARIANT: variant_entry(path, threshold, metrics, out)}
    if table:
        variants[VARIANT]["calibration"] = table
    wall = time.time() - t0
    synthetic = synthetic_cohort(cohort)
    manifest = {
        "recipe": NAME, "version": args.version,
        "intended_use": INTENDED_USE if synthetic else SITE_INTENDED_USE,
        "training_data": TRAINING_DATA if synthetic else (
            f"cohort {cohort.get('source', '?')}: {cohort.get('usable_rows', len(args.examples))} usable exams — "
            "not for clinical use"),
        "synthetic": synthetic,
        "paper": "Sun et al., World Journal of Surgical Oncology 2022 (seed 001)", "opset": OPSET,
        "engine_rule": "one image-only variant; the nomogram (AFP) is a second probability when AFP is known",
        "preprocessing": preprocessing_constants(),
        "training": {
            "command": "mvi-node " + " ".join(shlex.quote(a) for a in sys.argv[1:]), "wall_seconds": round(wall, 1),
            "prepare_seconds": float(getattr(args, "prepare_seconds", 0.0) or 0.0), "seed": args.seed,
            "data": str(getattr(args, "cohort_path", "") or cohort.get("location", "")),
            "test_data": str(getattr(args, "test", "") or ""),
            "patients_train": len(train_set), "patients_validation": len(val_set), "patients_test": len(test),
            "optimizer": f"AdamW lr {args.lr:g} (one-cycle) weight decay 1e-4 batch {args.batch}",
            "combinations_per_patient_per_epoch": args.combinations_per_patient,
            "crop_size": f"{args.train_size} for the first epochs, 320 for the last {args.full_size_epochs}; "
                         "validation and serving at 320",
            "split": "by patient, seeded (--seed), stratified by label; a split column wins",
        },
        "cohort": cohort,
        "variants": variants,
    }
    (out / "manifest.toml").write_text(tomli_w.dumps(manifest), encoding="utf-8")
    (out / "MODEL_CARD.md").write_text(model_card(manifest, cohort), encoding="utf-8")
    print(json.dumps({"out": str(out), "wall_seconds": round(wall, 1), **metrics.get("test", trained.validation)}))
    return 0
