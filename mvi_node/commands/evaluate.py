"""``mvi-node evaluate --model RECIPE[@VERSION] --cohort COHORT --out DIR``.

Runs the served model on every exam of a cohort exactly as the node would (header
selection, the exam's annotations, ONNX Runtime, the manifest's calibration) and writes
``predictions.csv``, ``metrics.json``, ``report.html``, ``report.pdf`` and
``figures/``. A second ``--model`` adds a paired DeLong test between the two AUCs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path


def parse_model(spec: str) -> tuple[str, str | None]:
    name, _, version = spec.partition("@")
    return name, version or None


def served_engine(spec: str, roots: list[Path], providers=None):
    """An engine serving only ``RECIPE[@VERSION]`` from ``roots``; raises SystemExit(2) with a reason."""
    from mvi_node.commands.engine_args import provider_choice
    from mvi_node.infer import Engine, ManifestError, ModelRegistry, RecipeCatalog, RecipeError

    name, version = parse_model(spec)
    try:
        registry = ModelRegistry(roots, pins={name: version} if version else None)
        catalog = RecipeCatalog.discover()
        recipe = catalog.get(name)
    except (ManifestError, RecipeError) as exc:
        raise SystemExit(f"{spec}: {exc}") from None
    model = registry.get(name)
    if model is None:
        found = sorted(m.version for m in registry.models.get(name, []))
        raise SystemExit(f"{spec}: no model folder under {', '.join(map(str, roots))} (found versions: {found or 'none'})")
    engine = Engine(registry, recipes=catalog.only([name]), **provider_choice(providers))
    return engine, recipe, model


def _identity(engine, recipe: str, runs) -> dict:
    variants = Counter(r.result.prediction.variant for r in runs if r.evaluated)
    variant = variants.most_common(1)[0][0] if variants else None
    ident = dict(engine.identity(recipe, variant))
    ident["version"] = ident.get("model_version")
    return ident


def _threshold(engine, recipe: str, ident: dict) -> float:
    model = engine.registry.get(recipe)
    return float(model.variants[ident["variant"]].threshold)


def _progress(total: int, what: str):
    from tqdm import tqdm

    return lambda items: tqdm(items, total=total, desc=what, unit="exam", file=sys.stderr)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mvi_node.cohort import open_cohort
    from mvi_node.cohort.runs import prediction_rows, run_cohort
    from mvi_node.evaluation.report import evaluate_predictions
    from mvi_node.infer.registry import DEFAULT_ROOT

    roots = [DEFAULT_ROOT, *[Path(p) for p in (args.models or [])]]
    cohort = open_cohort(args.cohort)
    evaluated = []
    for spec in args.model:
        engine, recipe, _model = served_engine(spec, roots)
        label = recipe.endpoint.label or recipe.endpoint.name
        runs = run_cohort(cohort, engine, recipe.name, clinical=not args.without_clinical,
                          progress=_progress(len(cohort), spec))
        rows, failed = prediction_rows(runs, label)
        if not rows:
            print(f"{spec}: no exam of the cohort could be evaluated", file=sys.stderr)
            for f in failed[:20]:
                print(f"  row {f['exam']}: {f['outcome']} ({'; '.join(f['reasons'])})", file=sys.stderr)
            return 1
        ident = _identity(engine, recipe.name, runs)
        evaluated.append((spec, label, rows, failed, ident, _threshold(engine, recipe.name, ident)))
    spec, label, rows, failed, ident, threshold = evaluated[0]
    compare = None
    if len(evaluated) > 1:
        _s, _l, rows_b, _f, ident_b, threshold_b = evaluated[1]
        compare = {"model": ident_b, "rows": rows_b, "threshold": threshold_b}
    metrics = evaluate_predictions(rows, label=label, threshold=threshold, model=ident, out_dir=Path(args.out),
                                   failed=failed, compare=compare, bootstrap=args.bootstrap, seed=args.seed,
                                   pdf=not args.no_pdf)
    summary = {k: metrics.get(k) for k in ("n", "positives", "auc", "auc_ci_low", "auc_ci_high", "brier",
                                           "calibration_intercept", "calibration_slope", "not_evaluated")}
    if compare:
        summary["compare"] = {k: metrics["compare"].get(k) for k in ("auc_a", "auc_b", "difference", "p_value")}
    print(json.dumps({"out": str(args.out), "model": spec, **summary}, indent=2))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="run a served model over a cohort; metrics, figures and a report page")
    p.add_argument("--model", action="append", required=True, metavar="RECIPE[@VERSION]",
                   help="model to evaluate (twice: compare two models with a paired DeLong test)")
    p.add_argument("--cohort", required=True, help="cohort CSV, a folder holding cohort.csv, or an mvi-node synth folder")
    p.add_argument("--out", required=True, help="folder for predictions.csv, metrics.json, report.html, figures/")
    p.add_argument("--models", action="append", help="extra model root (repeatable; the repository's models/ always)")
    p.add_argument("--without-clinical", action="store_true", help="withhold clinical factors (image-only variants)")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples for the ROC and calibration bands")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-pdf", action="store_true", help="skip report.pdf")
    p.set_defaults(func=cmd_evaluate)
