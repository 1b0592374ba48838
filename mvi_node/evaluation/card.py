"""Human-readable model card from a model folder's manifest (Mitchell et al., Model Cards,
FAT* 2019), the same layout for every recipe.

The manifest gives what is generic: recipe, version, intended use, training data (a
**NOT FOR CLINICAL USE** banner when it is synthetic), paper, files and their sha256, the
metrics of each variant on each set (discrimination, and calibration when stored), the
training record and the command that reproduces the folder. The recipe adds what only it
knows as text: its method, a note under the metrics, how its data are regenerated, extra
training notes, limitations, further sections.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

#: the sets a variant's metrics table lists first, in this order
SPLITS = ("validation", "test")

#: ``training`` keys the writer words itself; any other key gets a generic line
_TRAINING_KEYS = {"command", "wall_seconds", "seed", "data", "test_data", "patients_train",
                  "patients_validation", "patients_test", "optimizer"}


def is_synthetic(manifest: Mapping[str, Any]) -> bool:
    """Training data called synthetic (or ``synthetic = true`` in the manifest)."""
    if "synthetic" in manifest:
        return bool(manifest["synthetic"])
    return "synthetic" in str(manifest.get("training_data", "")).lower()


def _f(value: Any, fmt: str = ".3f") -> str:
    if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return format(value, fmt)
    return "n/a"


def _splits(metrics: Mapping[str, Any], key: str) -> list[tuple[str, Mapping[str, Any]]]:
    names = [s for s in SPLITS if s in metrics] + [s for s in metrics if s not in SPLITS]
    return [(s, metrics[s]) for s in names if isinstance(metrics[s], Mapping) and key in metrics[s]]


def metrics_table(variants: Mapping[str, Any]) -> str:
    """Discrimination per variant and set: patients (positives), AUC with CI, threshold,
    sensitivity, specificity, accuracy. Sets without an AUC are left out."""
    rows = ["| variant | set | patients (MVI+) | AUC (95% CI, DeLong) | threshold | sensitivity | specificity | accuracy |",
            "|---|---|---|---|---|---|---|---|"]
    for name, v in variants.items():
        for split, m in _splits(v.get("metrics", {}), "auc"):
            ci = m.get("auc_ci95") or [float("nan"), float("nan")]
            rows.append(f"| {name} | {split} | {m.get('patients', 'n/a')} ({m.get('positives', 'n/a')}) | "
                        f"{_f(m['auc'])} ({_f(ci[0])}-{_f(ci[1])}) | {_f(m.get('threshold'), '.4f')} | "
                        f"{_f(m.get('sensitivity'))} | {_f(m.get('specificity'))} | {_f(m.get('accuracy'))} |")
    return "\n".join(rows)


def calibration_table(variants: Mapping[str, Any]) -> str:
    """Calibration per variant and set (Brier, ECE, intercept, slope); empty when no set
    stores a Brier score."""
    body = []
    for name, v in variants.items():
        for split, m in _splits(v.get("metrics", {}), "brier"):
            body.append(f"| {name} | {split} | {_f(m['brier'])} | {_f(m.get('ece'))} | "
                        f"{_f(m.get('calibration_intercept'))} | {_f(m.get('calibration_slope'))} |")
    if not body:
        return ""
    bins = next((m.get("ece_bins") for v in variants.values() for _, m in _splits(v.get("metrics", {}), "brier")
                 if m.get("ece_bins")), None)
    head = [f"| variant | set | Brier | ECE{f' ({bins} bins)' if bins else ''} | calibration intercept "
            "(0 ideal) | calibration slope (1 ideal) |", "|---|---|---|---|---|---|"]
    return "\n".join(head + body)


def _files(variants: Mapping[str, Any]) -> str:
    lines = []
    for n, v in variants.items():
        if "file" not in v:
            continue
        line = f"- `{v['file']}` ({n}): sha256 `{v.get('sha256', 'n/a')}`"
        if v.get("inputs"):
            line += ", inputs " + ", ".join(f"`{i['name']}` {i['shape']}" for i in v["inputs"])
        lines.append(line)
    return "\n".join(lines)


def _history(variants: Mapping[str, Any]) -> str:
    lines = []
    for n, v in variants.items():
        h = v.get("metrics", {}).get("history")
        if h is None:
            continue
        lines.append(f"- {n}: {json.loads(h) if isinstance(h, str) else h}")
    return "\n".join(lines)


def _training(manifest: Mapping[str, Any], data_commands: Mapping[str, str] | None,
              notes: Sequence[str]) -> str:
    t = manifest.get("training", {})
    lines = []
    if data_commands:
        lines += [f"- {label}: `{cmd}`" for label, cmd in data_commands.items()]
    else:
        lines += [f"- {label}: `{t[k]}`" for label, k in (("Data", "data"), ("Test data", "test_data")) if t.get(k)]
    if t.get("command"):
        source = "the data above" if data_commands or t.get("data") else "its training data"
        lines.append(f"- Command (reproduces this folder from {source}): `{t['command']}`")
    if "wall_seconds" in t:
        lines.append(f"- Wall time: {t['wall_seconds']:.0f} s" + (f"; seed {t['seed']}" if "seed" in t else ""))
    elif "seed" in t:
        lines.append(f"- Seed: {t['seed']}")
    counts = [f"{t[k]} {label}" for k, label in (("patients_train", "training"), ("patients_validation", "validation"),
                                                ("patients_test", "test")) if k in t]
    if counts:
        lines.append("- Patients: " + ", ".join(counts))
    if t.get("optimizer"):
        lines.append(f"- Optimizer: {t['optimizer']}")
    for k, v in t.items():
        if k not in _TRAINING_KEYS:
            label = k.replace("_", " ")
            lines.append(f"- {label[0].upper() + label[1:]}: {v}")
    lines += [f"- {n}" for n in notes]
    history = _history(manifest.get("variants", {}))
    if history:
        lines.append("- Epoch history:\n" + history)
    return "\n".join(lines)


def model_card(manifest: Mapping[str, Any], *, method: str | None = None, performance_note: str | None = None,
               data_commands: Mapping[str, str] | None = None, training_notes: Sequence[str] = (),
               limitations: str | None = None, sections: Mapping[str, str] | None = None,
               synthetic: bool | None = None) -> str:
    """Markdown model card.

    ``manifest``: the dict written to ``manifest.toml`` (``recipe``, ``version``,
    ``intended_use``, ``training_data``, optional ``paper``, ``training``, ``variants``
    with ``metrics`` per set). Recipe text: ``method`` (under "Method (paper)"),
    ``performance_note`` (under the metrics tables), ``data_commands`` (label -> command
    that regenerates the training / test data; default the data paths of ``training``),
    ``training_notes`` (extra bullets), ``limitations``, ``sections`` (heading -> text,
    appended in order). ``synthetic`` overrides :func:`is_synthetic`.
    """
    synth = is_synthetic(manifest) if synthetic is None else synthetic
    variants = manifest.get("variants", {})
    banner = "**NOT FOR CLINICAL USE.** " if synth else ""
    parts = [f"# Model card: {manifest['recipe']} {manifest['version']}",
             f"{banner}Training data: {manifest['training_data']}.",
             f"## Intended use\n{manifest['intended_use']}"]
    if method:
        paper = f" ({manifest['paper']})" if manifest.get("paper") else ""
        parts.append(f"## Method{paper}\n{method.strip()}")
    files = _files(variants)
    if files:
        parts.append(f"## Files\n{files}")
    perf = [metrics_table(variants)]
    calib = calibration_table(variants)
    if calib:
        perf.append("Calibration of the predicted probability:\n\n" + calib)
    if performance_note:
        perf.append(performance_note.strip())
    parts.append(f"## Performance{' (synthetic data only)' if synth else ''}\n" + "\n\n".join(perf))
    training = _training(manifest, data_commands, training_notes)
    if training:
        parts.append(f"## Training\n{training}")
    if limitations:
        parts.append(f"## Limitations\n{limitations.strip()}")
    for heading, text in (sections or {}).items():
        parts.append(f"## {heading}\n{text.strip()}")
    return "\n\n".join(parts) + "\n"


# -- shared by the recipes' cards: how the data are had again, what the cohort held ----------
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


def data_command(cohort: dict[str, Any]) -> str:
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
