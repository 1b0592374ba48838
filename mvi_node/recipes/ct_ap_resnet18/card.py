"""Human-readable model card from the manifest (Mitchell et al., Model Cards, 2019)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _metrics_rows(variants: dict[str, Any]) -> str:
    rows = ["| variant | set | patients (MVI+) | AUC (95% CI, DeLong) | threshold | sensitivity | specificity | accuracy |",
            "|---|---|---|---|---|---|---|---|"]
    for name, v in variants.items():
        for split in ("validation", "test"):
            m = v["metrics"].get(split)
            if not m or "auc" not in m:
                continue
            rows.append(f"| {name} | {split} | {m['patients']} ({m['positives']}) | {m['auc']:.3f} "
                        f"({m['auc_ci95'][0]:.3f}-{m['auc_ci95'][1]:.3f}) | {m['threshold']:.4f} | "
                        f"{m['sensitivity']:.3f} | {m['specificity']:.3f} | {m['accuracy']:.3f} |")
    return "\n".join(rows)


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


def model_card(manifest: dict[str, Any], data: Path | str, test: str | None) -> str:
    t = manifest["training"]
    pp = manifest["preprocessing"]
    files = "\n".join(f"- `{v['file']}` ({n}): sha256 `{v['sha256']}`, inputs "
                      + ", ".join(f"`{i['name']}` {i['shape']}" for i in v["inputs"])
                      for n, v in manifest["variants"].items())
    hist = "\n".join(f"- {n}: {json.loads(v['metrics']['history'])}" for n, v in manifest["variants"].items())
    return f"""# Model card: {manifest['recipe']} {manifest['version']}

**NOT FOR CLINICAL USE.** Training data: {manifest['training_data']}.

## Intended use
{manifest['intended_use']}

## Method ({manifest['paper']})
CT late arterial phase; HU window level {pp['window_level']:g} / width {pp['window_width']:g} to 0..255; per tumour
slice the square box around the ROI (tight masks widened by {pp['tight_mask_pad_mm']:g} mm, like the paper's circle
~1 cm wider than the tumour), centred crop {pp['crop_margin']} x box edge, resized to {pp['size']} x {pp['size']},
3 channels. 2D ResNet-18 (MONAI, trained from scratch: no pretrained weights offline); clinical variant: sex, age,
MTD, AFP, Child-Pugh (one-hot), HBsAg, HCV -> FC 9 units concatenated into the last FC (2 classes).
Patient score = max over slices; threshold = Youden's J on validation. Grad-CAM of the MVI logit on layer4 is
computed inside the ONNX graph (opset {manifest['opset']}). {manifest['engine_rule']}.

## Files
{files}

## Performance (synthetic data only)
{_metrics_rows(manifest['variants'])}

Validation: patients held out of the training split of `{data}` (split by patient). Test: `{test or 'none'}`, a
population generated with another seed and vendor mix. These figures say the pipeline learns the synthetic
signs; they say nothing about real patients.

## Training
- Data: `{synth_command(data)}`
- Test data: `{synth_command(test) if test else 'none'}`
- Command (reproduces this folder from those two folders): `{t['command']}`
- Wall time: {t['wall_seconds']:.0f} s on a shared 2-core CPU (crop cache, both variants, ONNX export, test),
  not counting data generation; seed {t['seed']}; deterministic on one machine unless `--max-minutes` cuts an
  epoch short
- Patients: {t['patients_train']} training, {t['patients_validation']} validation, {t['patients_test']} test
- {t['optimizer']}; {t['slices_per_patient_per_epoch']} tumour slices per patient per epoch; early stop on
  validation AUC
- Epoch history:
{hist}

## Limitations
Synthetic phantoms with simulated MVI signs; no real scanner noise, artefacts or pathology. Clinical factors
are drawn from distributions in which MVI+ tumours are larger and AFP higher, so the clinical variant can lean
on them. Never use for diagnosis.
"""
