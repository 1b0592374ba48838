"""Seed 000's model card: its method, data commands and limitations as text, written by the
shared writer :func:`mvi_node.evaluation.card.model_card`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mvi_node.evaluation.card import model_card as write_card


def synth_command(folder: Path | str) -> str:
    """The ``mvi-node synth`` call that rewrites ``folder`` (from its manifest header)."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return f"(no manifest.json in {folder})"
    h = json.loads(path.read_text(encoding="utf-8"))
    o = h.get("options", {})
    cmd = [f"mvi-node synth {h['modality'].lower()} --out {folder} --patients {h['patients']} --seed {h['seed']}"]
    for key in ("vendor", "annotations", "matrix", "seg_on", "sign_strength", "hard_cases", "noise"):
        if o.get(key) is not None:
            cmd.append(f"--{key.replace('_', '-')} {o[key]}")
    if o.get("thin"):
        cmd.append("--thin")
    return " ".join(cmd)


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


def _data_command(cohort: dict[str, Any]) -> str:
    """How the data are had again: the synth call for a synth folder, else the cohort's path."""
    if cohort.get("kind") == "synth" and cohort.get("location"):
        return synth_command(cohort["location"])
    return f"cohort {cohort.get('location', cohort.get('source', '?'))}"


def cohort_section(cohort: dict[str, Any]) -> str:
    """Source, rows, usable rows, label prevalence, manufacturers, splits, rows left out."""
    if not cohort:
        return "No cohort description recorded."
    lines = [f"- Source: {cohort.get('source', '?')} ({cohort.get('rows', '?')} rows, "
             f"{cohort.get('usable_rows', '?')} usable, {cohort.get('patients', '?')} patients)"]
    if "prevalence" in cohort:
        lines.append(f"- Label `{cohort.get('label')}`: {cohort.get('positives')} positive, prevalence "
                     f"{cohort['prevalence']:.2f}")
    elif "classes" in cohort:
        lines.append(f"- Label `{cohort.get('label')}`: " + ", ".join(f"{k} {v}" for k, v in cohort["classes"].items()))
    if cohort.get("manufacturers"):
        lines.append("- Manufacturers: " + ", ".join(f"{k} {v}" for k, v in cohort["manufacturers"].items()))
    if cohort.get("splits"):
        lines.append("- Exams per split (by patient): " + ", ".join(f"{k} {v}" for k, v in cohort["splits"].items()))
    if cohort.get("left_out"):
        lines.append("- Rows left out: " + "; ".join(f"{k} ({v})" for k, v in cohort["left_out"].items()))
    if cohort.get("test_cohort"):
        lines.append("- Test cohort (held out whole):\n  " + cohort_section(cohort["test_cohort"]).replace("\n", "\n  "))
    return "\n".join(lines)


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
    commands = {"Data": _data_command(cohort), "Test data": _data_command(test) if test else "none"}
    return write_card(
        manifest, method=method(manifest), performance_note=note, data_commands=commands,
        training_notes=[
            "Inputs made by the serving path: the node's header selection of the arterial series, the ROI from "
            "the exam's own annotation (SEG, RTSTRUCT, SR or GSPS), the recipe's own preprocessing",
            "Wall time covers both variants, ONNX export and test on the machine that trained; preparing the "
            "cohort's exams is the prepare time; deterministic on one machine unless `--max-minutes` cuts an "
            "epoch short",
            "Slices per patient per epoch are tumour slices; early stop on validation AUC",
        ],
        limitations=LIMITATIONS if synthetic else SITE_LIMITATIONS,
        sections={"Cohort": cohort_section(cohort)}, synthetic=synthetic)
