"""Seed 000's model card: its method, data commands and limitations as text, written by the
shared writer :func:`mvi_node.evaluation.card.model_card`."""

from __future__ import annotations

from typing import Any

from mvi_node.evaluation.card import cohort_section, data_command
from mvi_node.evaluation.card import model_card as write_card


def method(manifest: dict[str, Any]) -> str:
    pp = manifest["preprocessing"]
    return f"""CT late arterial phase; HU window level {pp['window_level']:g} / width {pp['window_width']:g} to 0..255; per tumour
slice the square box around the ROI (tight masks widened by {pp['tight_mask_pad_mm']:g} mm, like the paper's circle
~1 cm wider than the tumour), centred crop {pp['crop_margin']} x box edge, resized to {pp['size']} x {pp['size']},
3 channels. 2D ResNet-18 (MONAI, trained from scratch: no pretrained weights offline); clinical variant: sex, age,
MTD, AFP, Child-Pugh (one-hot), HBsAg, HCV -> FC 9 units concatenated into the last FC (2 classes).
Patient score = max over slices; threshold = Youden's J on validation. Grad-CAM of the MVI logit on layer4 is
computed inside the ONNX graph (opset {manifest['opset']}). {manifest['engine_rule']}."""


LIMITATIONS = """Synthetic phantoms with simulated MVI signs; no real scanner noise, artefacts or pathology. Clinical factors
are drawn from distributions in which MVI+ tumours are larger and AFP higher, so the clinical variant can lean
on them. Never use for diagnosis."""

SITE_LIMITATIONS = """Trained on one site's cohort: scanners, protocols, annotation habits and patient mix of that site only.
Performance on held-out exams of the same site says little about other sites. The patient score is the maximum
over tumour slices of the annotated (main) tumour. Never use for diagnosis."""


def model_card(manifest: dict[str, Any], cohort: dict[str, Any]) -> str:
    """Markdown card of a folder trained on ``cohort`` (the description ``mvi-node train`` gives)."""
    synthetic = bool(manifest.get("synthetic"))
    test = cohort.get("test_cohort")
    note = ("Validation: patients of the cohort held out of training (split by patient; the threshold is chosen "
            "there). Test: " + (f"the separate cohort {test.get('source')}" if test else
                                "the cohort's test split" if cohort.get("splits", {}).get("test") else "none") + ".")
    if synthetic:
        note += (" The data are synthetic phantoms: these figures say the pipeline learns the synthetic signs; "
                 "they say nothing about real patients.")
    if any(v.get("calibration") for v in manifest["variants"].values()):
        note += (" Probabilities are Platt-calibrated on the validation split, as served; test figures and "
                 "thresholds are on the calibrated scale.")
    elif any("brier" in m for v in manifest["variants"].values() for m in v["metrics"].values() if isinstance(m, dict)):
        note += " Calibration is of the patient score (max over slices) as served, not recalibrated."
    commands = {"Data": data_command(cohort), "Test data": data_command(test) if test else "none"}
    return write_card(
        manifest, method=method(manifest), performance_note=note, data_commands=commands,
        training_notes=[
            "Inputs made by the serving path: the node's header selection of the arterial series, the ROI from "
            "the exam's own annotation (SEG, RTSTRUCT, SR or GSPS), the recipe's own preprocessing",
            "Wall time covers both variants, ONNX export and test on the machine that trained; preparing the "
            "cohort's exams is the prepare time; deterministic on one machine unless `--max-minutes` cuts an "
            "epoch short",
            "Slices per patient per epoch are tumour slices; early stop on validation AUC",
            *([f"Quantisation-aware fine-tuning from {manifest['training']['quantisation_aware_from']} (both variants "
               f"from that folder's fp32 graphs, batch norms folded): {manifest['training']['quantisation_aware']}. "
               "The graphs here are plain fp32; `mvi-node quantize` makes and checks the int8 copy"]
              if manifest.get("training", {}).get("quantisation_aware_from") else []),
        ],
        limitations=LIMITATIONS if synthetic else SITE_LIMITATIONS,
        sections={"Cohort": cohort_section(cohort)}, synthetic=synthetic)
