"""``mvi-node train ct_ap_resnet18``: cache -> train both variants -> ONNX -> test -> manifest + card."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import tomli_w

from mvi_node import evaluation as ev
from mvi_node.infer.manifest import variant_entry
from mvi_node.recipes.ct_ap_resnet18.data import PatientCrops, build_cache, load_cache
from mvi_node.recipes.ct_ap_resnet18.recipe import NAME, preprocessing_constants

INTENDED_USE = ("Research and integration testing of the mvi-node pipeline only. Predicts microvascular "
                "invasion of hepatocellular carcinoma from the CT late arterial phase (Liu et al., Cancer "
                "Imaging 2021). NOT FOR CLINICAL USE: trained on synthetic phantoms.")
TRAINING_DATA = "synthetic phantoms — not for clinical use"
FILES = {"clinical": "model.onnx", "image_only": "model_image_only.onnx"}


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
    """Seed 000's training options (``--out``, ``--seed``, ``--version`` are shared)."""
    p.add_argument("--data", required=True, help="folder written by `mvi-node synth ct` (manifest.json)")
    p.add_argument("--test", help="separate synth folder (other seed/vendor mix) for the held-out evaluation")
    p.add_argument("--cache", help="crop cache folder (default: <data>/.cache/<recipe>)")
    p.add_argument("--epochs", type=int, default=12, help="image-only epochs (early stop on validation AUC)")
    p.add_argument("--clinical-epochs", type=int, default=4, help="clinical variant fine-tuning epochs")
    p.add_argument("--slices-per-patient", type=int, default=3, help="tumour slices sampled per patient per epoch")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--max-minutes", type=float, help="wall-clock budget for training both variants")
    p.add_argument("--max-steps", type=int, help="stop each variant after this many SGD steps (smoke tests)")


def main(args: argparse.Namespace) -> int:
    from mvi_node.recipes.ct_ap_resnet18.export import OPSET, export_onnx
    from mvi_node.recipes.ct_ap_resnet18.train import TrainConfig, split_patients, train_variants

    t0 = time.time()
    data, out = Path(args.data), Path(args.out)
    cache = Path(args.cache) if args.cache else data / ".cache" / NAME
    patients = load_cache(build_cache(data, cache))
    print(f"cache: {len(patients)} patients ({time.time() - t0:.0f} s)", flush=True)
    cfg = TrainConfig(seed=args.seed, epochs=args.epochs, clinical_epochs=args.clinical_epochs,
                      slices_per_patient=args.slices_per_patient, lr=args.lr, patience=args.patience,
                      max_minutes=args.max_minutes, max_steps=args.max_steps)
    trained = train_variants(patients, cfg, log=lambda m: print(m, flush=True))
    train_set, val_set = split_patients(patients, cfg.val_fraction, cfg.seed)
    test = None
    if args.test:
        tcache = Path(args.cache + "_test") if args.cache else Path(args.test) / ".cache" / NAME
        test = load_cache(build_cache(Path(args.test), tcache))
    out.mkdir(parents=True, exist_ok=True)
    variants = {}
    for name, tr in trained.items():
        path = export_onnx(tr.net, out / FILES[name])
        metrics = {"validation": tr.validation}
        if test:
            labels = np.array([p.label for p in test])
            scores = onnx_scores(path, test)
            metrics["test"] = {**ev.metrics_at(labels, scores, tr.threshold), **ev.calibration_metrics(labels, scores)}
        metrics["history"] = json.dumps(tr.history)
        variants[name] = variant_entry(path, tr.threshold, metrics, out)
    wall = time.time() - t0
    command = "mvi-node " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    manifest = {
        "recipe": NAME, "version": args.version, "intended_use": INTENDED_USE, "training_data": TRAINING_DATA,
        "paper": "Liu et al., Cancer Imaging 2021 (seed 000)", "opset": OPSET,
        "engine_rule": "clinical variant only when all seven clinical factors are present, else image_only",
        "preprocessing": preprocessing_constants(),
        "training": {
            "command": command, "wall_seconds": round(wall, 1), "seed": args.seed,
            "data": str(data), "test_data": str(args.test or ""),
            "patients_train": len(train_set), "patients_validation": len(val_set),
            "patients_test": len(test or []), "optimizer": "SGD lr %g momentum 0.9 weight decay 1e-5 batch 8" % args.lr,
            "slices_per_patient_per_epoch": args.slices_per_patient,
        },
        "variants": variants,
    }
    (out / "manifest.toml").write_text(tomli_w.dumps(manifest), encoding="utf-8")
    from mvi_node.recipes.ct_ap_resnet18.card import model_card

    (out / "MODEL_CARD.md").write_text(model_card(manifest, data, args.test), encoding="utf-8")
    print(json.dumps({"out": str(out), "wall_seconds": round(wall, 1),
                      **{n: v["metrics"].get("test", v["metrics"]["validation"]) for n, v in variants.items()}}))
    return 0
