"""``mvi-node train ct_ap_resnet18 --cohort C --out M``: examples -> both variants -> ONNX -> test -> manifest + card.

The command (:mod:`mvi_node.commands.train`) gives ``args.examples``: one
:class:`~mvi_node.infer.recipe.TrainingExample` per usable cohort exam, prepared by the
serving path and split by patient, each holding :func:`training_input` of the recipe's
``Prepared``; and ``args.cohort``: the cohort's description. Training uses the train
split, the threshold and early stop the validation split, and the test split (a
``--test-fraction`` of the cohort, a ``split`` column, or a second ``--test`` cohort)
is scored through the exported ONNX graph, as served.
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
from mvi_node.recipes.ct_ap_resnet18.data import PatientCrops, patient_crops, training_input
from mvi_node.recipes.ct_ap_resnet18.recipe import NAME, preprocessing_constants
from mvi_node.recipes.training import MIN_CALIBRATION_EXAMS, platt_on_validation, synthetic_cohort

__all__ = ["add_arguments", "main", "onnx_scores", "training_input"]

INTENDED_USE = ("Research and integration testing of the mvi-node pipeline only. Predicts microvascular "
                "invasion of hepatocellular carcinoma from the CT late arterial phase (Liu et al., Cancer "
                "Imaging 2021). NOT FOR CLINICAL USE: trained on synthetic phantoms.")
TRAINING_DATA = "synthetic phantoms — not for clinical use"
SITE_INTENDED_USE = ("Research use at the training site only. Predicts microvascular invasion of hepatocellular "
                     "carcinoma from the CT late arterial phase (Liu et al., Cancer Imaging 2021), trained on the "
                     "site's own cohort. NOT FOR CLINICAL USE: not a cleared device; validate on held-out exams "
                     "of the site before relying on it in any study.")
FILES = {"clinical": "model.onnx", "image_only": "model_image_only.onnx"}
LABEL = "mvi"


def onnx_scores(path: Path, patients: list[PatientCrops]) -> np.ndarray:
    """Patient scores from the exported graph (what the node serves), max over slices."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    out = []
    for p in patients:
        x = np.repeat((p.grey.astype(np.float32) / 255.0)[:, None], 3, axis=1)
        feed = {"image": x}
        if "clinical" in names:
            feed["clinical"] = np.repeat(p.clinical[None].astype(np.float32), len(x), 0)
        out.append(float(sess.run(["probability"], feed)[0].max()))
    return np.asarray(out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Seed 000's training options (``--cohort``, ``--test``, ``--out``, ``--seed``,
    ``--version`` and the split fractions are shared by every recipe)."""
    p.add_argument("--epochs", type=int, default=12, help="image-only epochs (early stop on validation AUC)")
    p.add_argument("--clinical-epochs", type=int, default=4, help="clinical variant fine-tuning epochs")
    p.add_argument("--slices-per-patient", type=int, default=3, help="tumour slices sampled per patient per epoch")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--max-minutes", type=float, help="wall-clock budget for training both variants")
    p.add_argument("--max-steps", type=int, help="stop each variant after this many SGD steps (smoke tests)")
    p.add_argument("--qat-from", metavar="MODEL_DIR",
                   help="quantisation-aware fine-tuning from this served model folder's fp32 graphs (int8 "
                        "simulated in training; quantise the result with mvi-node quantize)")
    p.add_argument("--distill", action="store_true",
                   help="with --qat-from: train the int8 student to give the served graph's outputs (probability, "
                        "Grad-CAM, features) instead of fitting the labels; quantise it with "
                        "mvi-node quantize --int8-from")
    p.add_argument("--self-consistent", type=float, default=0.0, metavar="W",
                   help="with --distill: also train the network's simulated int8 outputs to equal its own fp32 "
                        "ones (weight W), so that the result is a new model whose fp32 graph is served and "
                        "quantised as usual (mvi-node quantize, without --int8-from)")
    p.add_argument("--int8-first-conv", action="store_true",
                   help="with --qat-from: simulate the first convolution in int8 too (quantize --no-float-first)")


def _crops(examples: list[Any]) -> dict[str, list[PatientCrops]]:
    out: dict[str, list[PatientCrops]] = {"train": [], "validation": [], "test": []}
    for e in examples:
        crops = patient_crops(e, LABEL)
        if len(crops.grey):
            out.setdefault(e.split, []).append(crops)
    return out


def _patients(crops: list[PatientCrops]) -> int:
    return len({p.patient_id for p in crops})


def _calibrate(path: Path, val: list[PatientCrops], cohort: dict[str, Any]):
    """Platt scaling of the exported graph's scores on the validation split (see
    :func:`mvi_node.recipes.training.platt_on_validation`)."""
    if len(val) < MIN_CALIBRATION_EXAMS:
        return None, None
    return platt_on_validation([p.label for p in val], onnx_scores(path, val), cohort)


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mvi_node import evaluation as ev
    from mvi_node.recipes.ct_ap_resnet18.card import model_card
    from mvi_node.recipes.ct_ap_resnet18.export import OPSET, export_onnx
    from mvi_node.recipes.ct_ap_resnet18.train import TrainConfig, train_variants

    t0 = time.time()
    out = Path(args.out)
    cohort: dict[str, Any] = dict(getattr(args, "cohort", None) or {})
    sets = _crops(list(getattr(args, "examples", None) or []))
    train_set, val_set, test = sets["train"], sets["validation"], sets["test"]
    if not train_set or not val_set:
        print(f"ct_ap_resnet18: need training and validation exams, have {len(train_set)} and {len(val_set)} "
              "(more rows, a larger --val-fraction, or a split column)", file=sys.stderr)
        return 1

    def log(message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    cfg = TrainConfig(seed=args.seed, epochs=args.epochs, clinical_epochs=args.clinical_epochs,
                      slices_per_patient=args.slices_per_patient, lr=args.lr, patience=args.patience,
                      max_minutes=args.max_minutes, max_steps=args.max_steps,
                      qat_from=args.qat_from, distill=args.distill, int8_first_conv=args.int8_first_conv,
                      self_consistent=args.self_consistent)
    bar = tqdm(total=cfg.epochs + cfg.clinical_epochs, desc="epochs", unit="epoch", file=sys.stderr,
               dynamic_ncols=True)

    def progress(variant: str, entry: dict) -> None:
        bar.update(1)
        bar.set_postfix(variant=variant, val_auc=entry.get("val_auc"), refresh=False)

    try:
        trained = train_variants(train_set, cfg, log=log, validation=val_set, progress=progress)
    finally:
        bar.close()
    out.mkdir(parents=True, exist_ok=True)
    variants = {}
    for name, tr in trained.items():
        path = export_onnx(tr.net, out / FILES[name])
        metrics = {"validation": tr.validation}
        # Platt scaling on the validation split, as served (mvi_node.infer.calibration)
        calibration, table = _calibrate(path, [p for p in val_set if name != "clinical" or p.clinical is not None],
                                        cohort)
        threshold = float(calibration.apply(tr.threshold)) if calibration else tr.threshold
        scored = [p for p in test if name != "clinical" or p.clinical is not None]
        if scored:
            labels = np.array([p.label for p in scored])
            scores = onnx_scores(path, scored)
            if calibration is not None:
                scores = np.asarray(calibration.apply(scores), float)
            if 0 < labels.sum() < len(labels):
                metrics["test"] = {**ev.metrics_at(labels, scores, threshold),
                                   **ev.calibration_metrics(labels, scores)}
            else:
                metrics["test"] = {"note": "test holds one class only", "patients": len(scored)}
        metrics["history"] = json.dumps(tr.history)
        variants[name] = variant_entry(path, threshold, metrics, out)
        if table:
            variants[name]["calibration"] = table
    wall = time.time() - t0
    command = "mvi-node " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    synthetic = synthetic_cohort(cohort)
    clinical_train = [p for p in train_set if p.clinical is not None]
    manifest = {
        "recipe": NAME, "version": args.version,
        "intended_use": INTENDED_USE if synthetic else SITE_INTENDED_USE,
        "training_data": TRAINING_DATA if synthetic else (
            f"cohort {cohort.get('source', '?')}: {cohort.get('usable_rows', len(args.examples))} usable exams of "
            f"{cohort.get('rows', '?')} rows — not for clinical use"),
        "synthetic": synthetic,
        "paper": "Liu et al., Cancer Imaging 2021 (seed 000)", "opset": OPSET,
        "engine_rule": "clinical variant only when all seven clinical factors are present, else image_only",
        "preprocessing": preprocessing_constants(),
        "training": {
            "command": command, "wall_seconds": round(wall, 1),
            "prepare_seconds": float(getattr(args, "prepare_seconds", 0.0) or 0.0), "seed": args.seed,
            "data": str(getattr(args, "cohort_path", "") or cohort.get("location", "")),
            "test_data": str(getattr(args, "test", "") or ""),
            "patients_train": _patients(train_set), "patients_validation": _patients(val_set),
            "patients_test": _patients(test),
            "exams_train": len(train_set), "exams_validation": len(val_set), "exams_test": len(test),
            "exams_train_with_all_clinical_factors": len(clinical_train),
            "optimizer": ("SGD lr %g momentum 0.9 batch 8, no weight decay (distillation)" if args.distill
                          else "SGD lr %g momentum 0.9 weight decay 1e-5 batch 8") % args.lr,
            "slices_per_patient_per_epoch": args.slices_per_patient,
            **({"quantisation_aware_from": str(args.qat_from),
                "quantisation_aware": "int8 simulated in training (mvi_node.recipes.fake_quant): per-channel "
                                      "symmetric int8 weights, per-tensor uint8 activations, straight-through "
                                      "gradients; " + ("" if args.int8_first_conv else "first convolution and ")
                                      + "the last block's output float, as mvi-node quantize serves them"
                                      + ("; distilled from the served graph (its probability, Grad-CAM and "
                                         "features; labels unused), activation ranges frozen at the quantiser's "
                                         "percentile" if args.distill else "")
                                      + (f"; self-consistent (weight {args.self_consistent:g}): each step also "
                                         "trains the simulated int8 outputs to equal the same weights' fp32 "
                                         "outputs, so this model's own fp32 graph is the one served and checked"
                                         if args.self_consistent else "")} if args.qat_from else {}),
            "split": "by patient, seeded (--seed), stratified by label; a split column wins",
        },
        "cohort": cohort,
        "variants": variants,
    }
    (out / "manifest.toml").write_text(tomli_w.dumps(manifest), encoding="utf-8")
    (out / "MODEL_CARD.md").write_text(model_card(manifest, cohort), encoding="utf-8")
    print(json.dumps({"out": str(out), "wall_seconds": round(wall, 1),
                      **{n: v["metrics"].get("test", v["metrics"]["validation"]) for n, v in variants.items()}}))
    return 0
