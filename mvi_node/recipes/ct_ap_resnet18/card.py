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


def model_card(manifest: dict[str, Any], data: Path | str, test: str | None) -> str:
    """Markdown card of a folder trained on synth folder ``data`` and tested on ``test``."""
    note = f"""Validation: patients held out of the training split of `{data}` (split by patient). Test: `{test or 'none'}`, a
population generated with another seed and vendor mix. These figures say the pipeline learns the synthetic
signs; they say nothing about real patients."""
    if any("brier" in m for v in manifest["variants"].values() for m in v["metrics"].values() if isinstance(m, dict)):
        note += " Calibration is of the patient score (max over slices) as served, not recalibrated."
    return write_card(
        manifest, method=method(manifest), performance_note=note,
        data_commands={"Data": synth_command(data), "Test data": synth_command(test) if test else "none"},
        training_notes=[
            "Wall time covers the crop cache, both variants, ONNX export and test on a shared 2-core CPU, not "
            "counting data generation; deterministic on one machine unless `--max-minutes` cuts an epoch short",
            "Slices per patient per epoch are tumour slices; early stop on validation AUC",
        ],
        limitations=LIMITATIONS)
