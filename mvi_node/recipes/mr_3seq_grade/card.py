"""Seed 001's model card: method, data commands and limitations, written by the shared
writer :func:`mvi_node.evaluation.card.model_card`."""

from __future__ import annotations

from typing import Any

from mvi_node.evaluation.card import cohort_section, data_command
from mvi_node.evaluation.card import model_card as write_card


def method(manifest: dict[str, Any]) -> str:
    pp = manifest["preprocessing"]
    mr = pp.get("mr_preprocessing", {})
    return f"""DCE-MRI T1 pre-contrast, portal venous and transitional/delayed phases chosen by header. Shared MR
preprocessing: N4 bias-field correction, robust percentiles to 0..255 per volume, rigid registration onto the
portal-venous grid when the sequences do not line up, linear resampling ({', '.join(sorted(mr)) or 'see manifest'}).
Per sequence three consecutive slices through the ROI's maximum diameter; the ROI rectangle + {pp['margin_px']} px
resized to {pp['size']} x {pp['size']}. One CNN branch per sequence (7x7 conv 64, six bottleneck blocks of width 64
and six of width 128, 512-d feature), concatenated, FC, softmax over M0/M1/M2; class probabilities averaged over
the 27 slice combinations; P(MVI) = P(M1) + P(M2); threshold = Youden's J on validation. Per-branch Grad-CAM of the
MVI-present contrast is computed inside the ONNX graph (opset {manifest['opset']}). Nomogram (AFP known):
logit = -3.51 + 1.53 [AFP > 20 ng/mL] + 3.58 [DL-MVI present]."""


LIMITATIONS = """Synthetic MR phantoms with simulated MVI signs (peritumoral enhancement, hypointense halo, capsule);
no real scanner artefacts, motion or pathology; grade M2 differs from M1 only by slightly stronger signs. The
paper itself lost accuracy on a later cohort (68.7%): scanner and protocol drift is real. Never use for diagnosis."""


def grade_section(manifest: dict[str, Any]) -> str:
    """The per-grade confusion matrix of the test set and the metrics at its own Youden threshold."""
    import json

    lines = []
    for name, v in manifest["variants"].items():
        test = v.get("metrics", {}).get("test", {})
        if "confusion_rows_true_cols_predicted" not in test:
            continue
        classes = test["classes"]
        matrix = json.loads(test["confusion_rows_true_cols_predicted"])
        lines += [f"Test set, {name}: most probable grade against the true grade "
                  f"(accuracy {test['grade_accuracy']:.3f}).", "",
                  "| true \\ predicted | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
        lines += [f"| {c} | " + " | ".join(str(x) for x in row) + " |" for c, row in zip(classes, matrix)]
        own = v["metrics"].get("test_at_own_youden")
        if own:
            lines += ["", f"At the test set's own Youden threshold ({own['threshold']:.3f}, for comparison with the "
                          f"paper; the node uses the validation threshold): sensitivity {own['sensitivity']:.3f}, "
                          f"specificity {own['specificity']:.3f}, accuracy {own['accuracy']:.3f}."]
    return "\n".join(lines) or "No test set."


def model_card(manifest: dict[str, Any], cohort: dict[str, Any]) -> str:
    synthetic = bool(manifest.get("synthetic"))
    test = cohort.get("test_cohort")
    note = ("Validation: patients held out of training (split by patient; threshold and calibration are chosen "
            "there). Test: " + (f"the separate cohort {test.get('source')}" if test else "the cohort's test split")
            + ". AUC is of P(MVI) = P(M1) + P(M2) against MVI present; the grade table counts the most probable grade.")
    if synthetic:
        note += " Synthetic data: the figures say the pipeline learns the synthetic signs, nothing about patients."
    if any(v.get("calibration") for v in manifest["variants"].values()):
        note += " P(MVI) is Platt-calibrated on the validation split, as served; test figures are calibrated."
    commands = {"Data": data_command(cohort), "Test data": data_command(test) if test else "none"}
    return write_card(
        manifest, method=method(manifest), performance_note=note, data_commands=commands,
        training_notes=["Inputs made by the serving path: the node's header selection of the three sequences, the "
                        "ROI from the exam's annotation, the shared MR preprocessing, the recipe's crops",
                        "Each epoch samples slice combinations per patient; early stop on validation AUC"],
        limitations=LIMITATIONS, sections={"MVI grades": grade_section(manifest), "Cohort": cohort_section(cohort)}, synthetic=synthetic)
