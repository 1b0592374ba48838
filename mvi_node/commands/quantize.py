"""``mvi-node quantize --model RECIPE[@VERSION] --calibration C --validation V --out DIR --version X``.

Any recipe's served model -> a new model folder with the same fp32 graphs (hard links,
sha256 unchanged) plus reduced-precision copies (``int8``: static QDQ, ``fp16``), each
listed in the manifest under ``[variants.<v>.precisions.<p>]`` with its sha256, how it
was made, the calibration set and the accuracy check (:mod:`mvi_node.infer.accuracy`).

1. Calibration: every exam of ``--calibration`` runs through the serving path (header
   selection, the exam's annotations, the recipe's own preparation) with a
   :class:`~mvi_node.infer.quantize.FeedRecorder` in place of the model runner: the
   tensors a graph is calibrated on are the ones it is fed when serving.
2. The copies are written and timed against fp32 on a recorded batch (CPU provider).
3. Check: every exam of ``--validation`` is prepared once and predicted with fp32 and
   with each copy through the engine's own sessions; classification recipes compare
   AUC, probabilities and Grad-CAM maps, segmentation recipes Dice against the fp32
   masks. ``passed`` goes into the manifest; the node serves only copies that passed.

Variants with clinical inputs see the exams with every clinical factor, the others the
exams with the factors withheld, as ``mvi-node calibrate`` does.

``--int8-from DIR``: the int8 copy of each variant is quantised from DIR's graph of the
same file (a student distilled from this model with int8 simulated, ``mvi-node train
ct_ap_resnet18 --qat-from THIS --distill``), not from this model's own. The fp32 graphs,
the calibration and the thresholds stay this model's, and the check compares the copy
with this model's fp32 graph, the one the node serves: a student that drifted fails it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

PRECISIONS = ("int8", "fp16")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        dst.hardlink_to(src)
    except OSError:
        shutil.copy2(src, dst)


def _prepared(cohort, engine, recipe, clinical: bool, progress):
    """(row, prepared inputs) of every exam the recipe can evaluate, through the serving path."""
    from mvi_node.clinical import NullClinicalSource
    from mvi_node.cohort.prepare import RowClinicalSource, exam_inputs, iter_exams
    from mvi_node.cohort.table import CohortError
    from mvi_node.infer.recipe import NotEvaluated

    for row, exam in progress(iter_exams(cohort, recipe)):
        if isinstance(exam, CohortError):
            continue
        winners = exam.winners()
        if not recipe.qualifies(winners)[0]:
            continue
        source = RowClinicalSource(row, cohort.clinical) if clinical else NullClinicalSource()
        try:
            prepared = recipe.prepare(exam_inputs(recipe, exam, winners, source))
        except Exception as exc:  # noqa: BLE001 - an exam that fails is left out and counted
            print(f"row {row.row}: prepare failed ({type(exc).__name__})", file=sys.stderr)
            continue
        if isinstance(prepared, NotEvaluated):
            continue
        if _segmenter(recipe):  # a model with more input channels reads the exam's other phases
            prepared = (prepared, _segmentation_phases(recipe, prepared, winners))
        yield row, prepared


def _segmentation_phases(recipe, target, winners) -> dict:
    """The exam's other phases a segmentation model reads (``channel_roles``), as the
    engine's segmentation service hands them over: usable ones only."""
    from mvi_node.infer.segmentation import usable_phase
    from mvi_node.roi.geometry import series_geometry

    out = {}
    for role in recipe.channel_roles[1:]:
        unit = winners.get(role)
        if unit is not None:
            geo = series_geometry(list(unit.datasets))
            if usable_phase(geo, target):
                out[role] = geo
    return out


def _segmenter(recipe) -> bool:
    from mvi_node.infer.segmentation import SegmentationRecipe

    return isinstance(recipe, SegmentationRecipe)


def _outcome(recipe, prepared, runner, model, ident, variant: str):
    """What the recipe serves for one prepared exam: a Prediction (calibrated as the engine
    does) or a Segmentation; None when it evaluates nothing."""
    from mvi_node.infer.engine import calibrated
    from mvi_node.infer.recipe import Prediction

    if _segmenter(recipe):
        target, phases = prepared
        return recipe.segment(target, runner, ident, phases=phases)
    out = recipe.predict(prepared, runner)
    if not isinstance(out, Prediction) or out.variant != variant:
        return None
    cal = model.variants[variant].calibration
    return calibrated(out, cal) if cal is not None else out


def _int8_source(folder: str, file: str) -> Path:
    path = Path(folder) / file
    if not path.is_file():
        raise SystemExit(f"--int8-from: {path} missing (the student folder needs every variant's graph)")
    return path


def _student_text(path: Path) -> str:
    """Where an int8 copy's weights came from, for the manifest: the student graph's sha256
    and the command that trained it (from the student folder's manifest)."""
    from mvi_node.infer.manifest import sha256_file

    command = ""
    manifest = path.parent / "manifest.toml"
    if manifest.is_file():
        command = tomllib.loads(manifest.read_text(encoding="utf-8")).get("training", {}).get("command", "")
    return (f"weights of the distilled int8 student {path.name} (sha256 {sha256_file(path)}"
            + (f", made by `{command}`" if command else "") + "), checked against this model's fp32 graph")


def _passes(model) -> list[tuple[str, bool]]:
    """(variant, with clinical factors) per ONNX variant."""
    return [(n, v.needs_clinical) for n, v in model.variants.items() if v.kind == "onnx"]


def cmd_quantize(args: argparse.Namespace) -> int:
    import tomli_w

    from mvi_node.cohort import open_cohort
    from mvi_node.commands.evaluate import _progress, served_engine
    from mvi_node.infer import accuracy, load_model
    from mvi_node.infer import quantize as q
    from mvi_node.infer.engine import _Runner
    from mvi_node.infer.manifest import sha256_file
    from mvi_node.infer.registry import DEFAULT_ROOT

    precisions = [p for p in args.precisions.split(",") if p]
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise SystemExit(f"--precisions: {bad} not offered (int8, fp16; bf16 has no ONNX Runtime CPU kernels)")
    roots = [DEFAULT_ROOT, *[Path(p) for p in (args.models or [])]]
    engine, recipe, model = served_engine(args.model, roots, providers=["CPUExecutionProvider"])
    engine.precision = "fp32"
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out}: not empty")
    t0 = time.time()
    calibration, validation = open_cohort(args.calibration), open_cohort(args.validation)
    label = recipe.endpoint.label or recipe.endpoint.name
    segmenter = _segmenter(recipe)

    # 1. calibration tensors from the serving path
    recorder = q.FeedRecorder(_Runner(engine, model), limit=args.samples)
    exams: dict[str, int] = {}
    for variant, clinical in _passes(model):
        for _row, prepared in _prepared(calibration, engine, recipe, clinical,
                                        _progress(len(calibration), f"calibration {variant}")):
            if _outcome(recipe, prepared, recorder, model, engine.identity(recipe.name, variant), variant) is not None:
                exams[variant] = exams.get(variant, 0) + 1
            if recorder.samples.get(variant, 0) >= args.samples:
                break

    # 2. the copies, timed against fp32 on one recorded batch
    out.mkdir(parents=True, exist_ok=True)
    manifest = tomllib.loads((model.folder / "manifest.toml").read_text(encoding="utf-8"))
    versions = q.describe_versions()
    for name, entry in manifest["variants"].items():
        _link_or_copy(model.folder / entry["file"], out / entry["file"])
    for name, entry in manifest["variants"].items():
        feeds = recorder.feeds.get(name)
        if not feeds:
            print(f"variant {name}: the calibration cohort gave it no inputs; no reduced-precision copy",
                  file=sys.stderr)
            continue
        src = model.folder / entry["file"]
        int8_src = _int8_source(args.int8_from, entry["file"]) if args.int8_from else src
        groups = q.batches(feeds, args.batch)
        probe = groups[0]
        entry["precisions"] = {}
        made = {}
        for precision in precisions:
            dst = out / src.name.replace(".onnx", f".{precision}.onnx")
            if precision == "int8":
                done = q.quantize_int8(int8_src, dst, groups, float_nodes=args.float_nodes or (),
                                       float_first=not args.no_float_first, bias_correction=not args.no_bias_correction,
                                       fold_input=not args.no_fold_input, equalise=not args.no_equalise,
                                       offset_weights={"auto": None, "yes": True, "no": False}[args.offset_weights])
                method = q.int8_method(done)
                if int8_src != src:
                    method += "; " + _student_text(int8_src)
                made[precision] = (dst, method)
            else:
                q.convert_fp16(src, dst)
                made[precision] = (dst, q.FP16_METHOD)
        fp32_s, *copies_s = q.interleaved_seconds([src, *(d for d, _m in made.values())], probe, reps=args.reps,
                                                  rounds=args.rounds)
        for (precision, (dst, method)), secs in zip(made.items(), copies_s):
            entry["precisions"][precision] = {
                "file": dst.name, "sha256": "", "precision": precision, "method": method, **versions,
                "calibration_set": (f"{recorder.samples.get(name, 0)} inputs of {exams.get(name, 0)} exams of "
                                    f"{calibration.source}, prepared by the serving path"
                                    + (f"; {args.calibration_note}" if args.calibration_note else "")
                                    if precision == "int8" else "none (a cast, no calibration)"),
                "check": {"passed": False, "pending": "accuracy check not run yet",
                          "seconds_fp32": round(fp32_s, 4), "seconds": round(secs, 4),
                          "speedup_vs_fp32": round(fp32_s / secs, 2), "timed_on": f"{len(next(iter(probe.values())))}"
                          f"-sample batch, CPU provider, median of {args.rounds} interleaved rounds of {args.reps} runs"},
            }
            entry["precisions"][precision]["sha256"] = sha256_file(dst)
    manifest["version"] = args.version
    manifest["quantized_from"] = f"{manifest['recipe']} {model.version}"
    manifest.setdefault("training", {})["quantize_command"] = "mvi-node " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    (out / "manifest.toml").write_text(tomli_w.dumps(manifest), encoding="utf-8")

    # 3. the accuracy check, through the engine's sessions on the new folder
    new = load_model(out)
    report: dict[str, Any] = {}
    for variant, clinical in _passes(new):
        shipped = [p for p in precisions if p in new.variants[variant].precisions]
        if not shipped:
            continue
        pairs: dict[str, list] = {p: [] for p in shipped}
        ident = new.identity(variant)
        for row, prepared in _prepared(validation, engine, recipe, clinical,
                                       _progress(len(validation), f"check {variant}")):
            ref = _outcome(recipe, prepared, _Runner(engine, new, "fp32"), new, ident, variant)
            if ref is None:
                continue
            for p in shipped:
                got = _outcome(recipe, prepared, _Runner(engine, new, p), new, ident, variant)
                pairs[p].append((ref, got) if segmenter else (row.labels.get(label), ref, got))
        for p in shipped:
            check = (accuracy.check_segmentations(pairs[p]) if segmenter
                     else accuracy.check_predictions([t for t in pairs[p] if t[2] is not None]))
            check["validation_set"] = f"{validation.source}" + (f"; {args.validation_note}" if args.validation_note else "")
            table = manifest["variants"][variant]["precisions"][p]
            timing = {k: table["check"][k] for k in ("seconds_fp32", "seconds", "speedup_vs_fp32", "timed_on")}
            table["check"] = {**check, **timing}
            report.setdefault(variant, {})[p] = {k: v for k, v in table["check"].items() if k != "tolerances"}
    manifest["training"]["quantize_seconds"] = round(time.time() - t0, 1)
    (out / "manifest.toml").write_text(tomli_w.dumps(manifest), encoding="utf-8")
    card = model.folder / "MODEL_CARD.md"
    if card.is_file():
        (out / "MODEL_CARD.md").write_text(_card(card.read_text(encoding="utf-8"), manifest), encoding="utf-8")
    load_model(out)  # what the node checks at start
    print(json.dumps({"out": str(out), "version": args.version, "variants": report}, indent=2, default=float))
    return 0


def _card(source: str, manifest: dict[str, Any]) -> str:
    """The source model's card under this folder's title, its own reduced-precision section
    (a copy made from an already quantised folder had one) replaced by this folder's."""
    lines = source.splitlines()
    if lines and lines[0].startswith("# Model card:"):
        lines[0] = f"# Model card: {manifest['recipe']} {manifest['version']}"
    kept, skipping = [], False
    for line in lines:
        if line.startswith("## "):
            skipping = line.strip() == "## Reduced-precision graphs"
        if not skipping:
            kept.append(line)
    return "\n".join(kept).rstrip("\n") + "\n" + _card_section(manifest)


def _card_section(manifest: dict[str, Any]) -> str:
    lines = ["", "## Reduced-precision graphs", "",
             f"Made from {manifest['quantized_from']} by `{manifest['training']['quantize_command']}`. The node serves "
             "the fastest copy whose accuracy check passed (or the precision a site pins, `[inference] precision`), "
             "else the fp32 graph; every result names the graph that ran (precision and sha256).", "",
             "| variant | precision | passed | AUC fp32 / copy | max prob. delta | Grad-CAM r mean / min | Dice liver min / tumour mean | speed-up |",
             "|---|---|---|---|---|---|---|---|"]
    for name, v in manifest["variants"].items():
        for p, t in v.get("precisions", {}).items():
            c = t["check"]
            lines.append(f"| {name} | {p} | {c.get('passed')} | {c.get('auc_fp32', '-')} / {c.get('auc', '-')} | "
                         f"{c.get('probability_delta_max', '-')} | {c.get('gradcam_correlation_mean', '-')} / "
                         f"{c.get('gradcam_correlation_min', '-')} | {c.get('liver_dice_min', '-')} / "
                         f"{c.get('tumour_dice_mean', '-')} | {c.get('speedup_vs_fp32')}x |")
    return "\n".join(lines) + "\n"


def register(subparsers) -> None:
    p = subparsers.add_parser("quantize", help="int8 / fp16 copies of a served model, calibrated and checked "
                                               "against fp32 (new model folder)")
    p.add_argument("--model", required=True, metavar="RECIPE[@VERSION]")
    p.add_argument("--calibration", required=True, help="cohort whose exams calibrate the int8 ranges")
    p.add_argument("--validation", required=True, help="cohort the accuracy check runs on (not the calibration one)")
    p.add_argument("--out", required=True, help="new model folder (models/<recipe>/<version>)")
    p.add_argument("--version", required=True, help="version of the new model folder")
    p.add_argument("--precisions", default="int8,fp16", help="comma-separated: int8, fp16 (default both)")
    p.add_argument("--samples", type=int, default=256, help="calibration inputs per variant (slices, tiles)")
    p.add_argument("--batch", type=int, default=16, help="calibration batch size and the timing batch (give 1 for a "
                                                         "sliding-window model: it runs one tile at a time)")
    p.add_argument("--reps", type=int, default=5, help="timed runs per graph and round")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds, the graphs interleaved")
    p.add_argument("--float-nodes", action="append", metavar="NODE",
                   help="int8: keep this graph node in float (repeatable; the head after the last conv always is)")
    p.add_argument("--no-float-first", action="store_true", help="int8: quantise the first convolution too")
    p.add_argument("--no-bias-correction", action="store_true", help="int8: skip the empirical bias correction")
    p.add_argument("--no-equalise", action="store_true",
                   help="int8: skip the activation equalisation of Conv-Relu-Conv pairs")
    p.add_argument("--no-fold-input", action="store_true",
                   help="int8 with --no-float-first: keep the input's scaling as separate float ops")
    p.add_argument("--offset-weights", choices=("auto", "yes", "no"), default="auto",
                   help="int8: convolution weights at zero point -1, for ONNX Runtime's AMX GEMM path (same outputs); "
                        "auto: when this CPU has AMX int8")
    p.add_argument("--int8-from", metavar="DIR",
                   help="int8: quantise the graphs of DIR (a student distilled from --model with int8 simulated: "
                        "mvi-node train ct_ap_resnet18 --qat-from MODEL --distill); fp32, calibration and the "
                        "check stay --model's")
    p.add_argument("--models", action="append", help="extra model root (repeatable; the repository's models/ always)")
    p.add_argument("--calibration-note", help="how the calibration cohort was made, for the manifest")
    p.add_argument("--validation-note", help="how the validation cohort was made, for the manifest")
    p.set_defaults(func=cmd_quantize)
