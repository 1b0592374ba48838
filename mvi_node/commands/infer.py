"""``mvi-node infer PATH [--json]``: selection + ROI + ONNX inference on a folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_infer(args: argparse.Namespace) -> int:
    import numpy as np

    from mvi_node.clinical import open_source
    from mvi_node.commands.engine_args import cli_engine
    from mvi_node.infer.engine import infer_path

    engine = cli_engine(args, clinical=open_source(args.clinical), precision=args.precision)
    if engine is None:
        return 2
    results = infer_path(Path(args.path), engine)["studies"]
    if args.gradcam_dir:
        out = Path(args.gradcam_dir)
        out.mkdir(parents=True, exist_ok=True)
        for r in results:
            if r.gradcam is not None:
                np.savez_compressed(out / f"{r.series_instance_uid}.npz", gradcam=r.gradcam,
                                    sop_instance_uids=np.array([s["sop_instance_uid"] for s in r.slice_info]))
    records = [r.as_dict() for r in results]
    if args.json:
        print(json.dumps({"providers": engine.providers, "recipes": engine.recipes.names(), "studies": records},
                         indent=2))
        return 0
    for r in records:
        line = f"{','.join(r['study_instance_uids'])} {r['recipe']}: {r['outcome']}"
        if r["outcome"] == "ok":
            line += (f" p={r['probability']:.3f} (threshold {r['threshold']:.3f}) -> "
                     f"{r['endpoint']} {'positive' if r['decision'] else 'negative'}; {r['slices']} slices; "
                     f"ROI {r['roi_source']}; "
                     f"clinical factors {'used' if r['clinical_factors_used'] else 'not used (missing ' + ', '.join(r['clinical_factors_missing']) + ')'}")
        elif not r["reported"]:
            line += " (not reported: another recipe evaluated the exam, or see the summary line)"
        if r["outcome"] != "ok" and r["reasons"]:
            line += " (" + "; ".join(r["reasons"]) + ")"
        if r["model_version"] and r["recipe"]:
            line += (f" [model {r['recipe']} {r['model_version']} {r['variant']} {r['model_precision'] or 'fp32'} "
                     f"sha256 {r['model_sha256'][:12]}; {r['training_data']}]")
        print(line)
    used = {(r["recipe"], r["model_version"], r["variant"], r["model_sha256"]): r["intended_use"]
            for r in records if r["model_version"] and r["recipe"]}
    for (recipe, version, variant, sha), use in sorted(used.items()):
        print(f"model {recipe} {version} {variant} sha256 {sha}: {use}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("infer", help="select series, find the tumour ROI and predict MVI for a folder")
    p.add_argument("path", help="folder of DICOM files (one or more exams)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--models", action="append", help="model root (repeatable; default: the repository's models/)")
    p.add_argument("--clinical", help="clinical-factor source: JSON/CSV file or folder of <accession>.json")
    p.add_argument("--providers", help="ONNX Runtime providers in order (default TensorRT, CUDA, CPU; absent ones skipped)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "int8", "fp16", "bf16"),
                   help="auto: the fastest copy whose accuracy check passed, else fp32; or pin one ([inference] precision)")
    p.add_argument("--gradcam-dir", help="write each series' Grad-CAM maps as <SeriesInstanceUID>.npz")
    p.set_defaults(func=cmd_infer)
