"""``mvi-node calibrate --model RECIPE[@VERSION] --cohort COHORT --out DIR --version V``.

Recalibrates a served model on a site's (or a fresh synthetic) cohort without retraining:
the model runs over the cohort exactly as the node runs it, each variant's raw scores are
fitted against the labels (Platt scaling on the logit, or isotonic regression, with
scikit-learn), and a new model folder is written: the same graphs (sha256 unchanged), the
calibration and the threshold carried onto the calibrated scale (so every decision stays
what it was) in the manifest, calibration before/after in the metrics, a model card. The
node then serves calibrated probabilities and the SR says on what they were calibrated.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import shutil
import sys
import tomllib
from pathlib import Path

import numpy as np

MIN_EXAMS = 20  # fewer, and a two-parameter fit is noise


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        dst.hardlink_to(src)
    except OSError:
        shutil.copy2(src, dst)


def _fit(method: str, labels: np.ndarray, raw: np.ndarray) -> dict:
    from mvi_node.evaluation import calibration as cal

    if method == "platt":
        a, b = cal.platt_fit(labels, raw, on_logit=True)
        if not (np.isfinite(a) and np.isfinite(b)):
            raise SystemExit("Platt fit has no finite solution (perfectly separated scores?): use --method isotonic")
        return {"method": "platt", "a": float(a), "b": float(b), "on_logit": True}
    return {"method": "isotonic", **cal.isotonic_fit(labels, raw)}


def cmd_calibrate(args: argparse.Namespace) -> int:
    import tomli_w

    from mvi_node.cohort import open_cohort
    from mvi_node.cohort.runs import run_cohort
    from mvi_node.commands.evaluate import _progress, served_engine
    from mvi_node.evaluation import calibration as cal
    from mvi_node.evaluation.card import model_card
    from mvi_node.infer.calibration import Calibration
    from mvi_node.infer.registry import DEFAULT_ROOT

    roots = [DEFAULT_ROOT, *[Path(p) for p in (args.models or [])]]
    engine, recipe, model = served_engine(args.model, roots)
    cohort = open_cohort(args.cohort)
    label = recipe.endpoint.label or recipe.endpoint.name
    scores: dict[str, list[tuple[int, float]]] = {}
    # with the clinical factors, then without: each variant gets the exams it serves
    for clinical in (True, False):
        for run in run_cohort(cohort, engine, recipe.name, clinical=clinical,
                              progress=_progress(len(cohort), f"{recipe.name} ({'with' if clinical else 'without'} clinical)")):
            if not run.evaluated or run.row.labels.get(label) is None:
                continue
            pred = run.result.prediction
            raw = pred.raw_probability if pred.raw_probability is not None else pred.probability
            scores.setdefault(pred.variant, []).append((int(run.row.labels[label]), float(raw)))
    manifest = tomllib.loads((model.folder / "manifest.toml").read_text(encoding="utf-8"))
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out}: not empty")
    out.mkdir(parents=True, exist_ok=True)
    fitted_on = f"{{n}} exams of {cohort.source}, {dt.date.today().isoformat()}"
    report = {}
    for name, entry in manifest["variants"].items():
        pairs = scores.get(name, [])
        labels = np.array([y for y, _ in pairs])
        if len(pairs) < args.min_exams or labels.min(initial=1) == labels.max(initial=0):
            raise SystemExit(f"variant {name}: {len(pairs)} evaluated exams with labels "
                             f"({int(labels.sum()) if len(labels) else 0} positive); need {args.min_exams} with both classes")
        raw = np.array([s for _, s in pairs])
        table = _fit(args.method, labels, raw)
        table["fitted_on"] = fitted_on.format(n=len(pairs))
        calibration = Calibration.from_manifest(table, name)
        before, after = cal.calibration_metrics(labels, raw), cal.calibration_metrics(labels, calibration.apply(raw))
        old_threshold = float(entry["threshold"])
        entry["threshold"] = float(calibration.apply(old_threshold))
        entry["calibration"] = table
        counts = {"patients": len(pairs), "positives": int(labels.sum())}
        # two sets the model card's calibration table lists: the graph's scores and the calibrated ones
        entry.setdefault("metrics", {})["calibration cohort, raw"] = {
            **counts, "threshold": old_threshold, **{k: v for k, v in before.items() if not isinstance(v, list)}}
        entry["metrics"]["calibration cohort, calibrated"] = {
            **counts, "threshold": entry["threshold"], **{k: v for k, v in after.items() if not isinstance(v, list)}}
        _link_or_copy(model.folder / entry["file"], out / entry["file"])
        report[name] = {"exams": len(pairs), "before": {k: before[k] for k in ("brier", "calibration_intercept", "calibration_slope")},
                        "after": {k: after[k] for k in ("brier", "calibration_intercept", "calibration_slope")}}
    manifest["version"] = args.version
    manifest["calibrated_from"] = f"{manifest['recipe']} {model.version}"
    manifest.setdefault("training", {})["calibration_command"] = "mvi-node " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    (out / "manifest.toml").write_text(tomli_w.dumps(manifest), encoding="utf-8")
    counts = ", ".join(f"{v}: {r['exams']} exams" for v, r in report.items())
    note = (f"Recalibrated from {manifest['calibrated_from']} by {args.method} on the cohort "
            f"{cohort.source} ({counts}); the graphs are unchanged and every threshold was carried onto the "
            "calibrated scale, so every decision is unchanged. Thresholds in the performance table above are the "
            "original model's, on the raw scale; the manifest's are on the calibrated scale.")
    if args.cohort_note:
        note += f" Cohort: {args.cohort_note}"
    (out / "MODEL_CARD.md").write_text(model_card(manifest, sections={"Calibration": note}), encoding="utf-8")
    from mvi_node.infer import load_model

    load_model(out)  # what the node will check at start
    print(json.dumps({"out": str(out), "version": args.version, "variants": report}, indent=2, default=float))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("calibrate", help="recalibrate a served model's probabilities on a cohort (new model folder)")
    p.add_argument("--model", required=True, metavar="RECIPE[@VERSION]")
    p.add_argument("--cohort", required=True, help="cohort CSV, a folder holding cohort.csv, or an mvi-node synth folder")
    p.add_argument("--out", required=True, help="new model folder (models/<recipe>/<version>)")
    p.add_argument("--version", required=True, help="version of the recalibrated model")
    p.add_argument("--method", choices=("platt", "isotonic"), default="platt")
    p.add_argument("--models", action="append", help="extra model root (repeatable; the repository's models/ always)")
    p.add_argument("--min-exams", type=int, default=MIN_EXAMS, help="fewest labelled exams per variant to fit on")
    p.add_argument("--cohort-note", help="how the cohort was made or where it comes from, for the model card")
    p.set_defaults(func=cmd_calibrate)
