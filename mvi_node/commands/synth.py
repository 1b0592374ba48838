"""``mvi-node synth {ct,mr}``: write a seeded synthetic population with ground truth."""

from __future__ import annotations

import argparse
import json
import time

from mvi_node.synth.spec import HARD_CASE_NAMES, LANGUAGES, VENDORS


def cmd_synth(args: argparse.Namespace) -> int:
    from mvi_node.synth.population import generate

    overrides = {name: True for name in (args.force or [])}
    for name in args.without or []:
        overrides[name] = False
    if args.language:
        overrides["language"] = args.language
    t0 = time.perf_counter()
    manifest = generate(
        args.modality, args.out, args.patients, args.seed, vendor=args.vendor,
        agent=args.agent if args.modality == "mr" else None, annotations=args.annotations,
        matrix=args.matrix, thin=args.thin, seg_on=args.seg_on, noise=args.noise,
        sign_strength=args.sign_strength, hard_cases=args.hard_cases, realism=args.realism, **overrides,
    )
    studies = manifest["studies"]
    summary = {
        "out": str(args.out), "studies": len(studies), "mvi_positive": sum(s["mvi"] for s in studies),
        "series": sum(len(s["series"]) for s in studies), "seconds": round(time.perf_counter() - t0, 2),
    }
    print(json.dumps(summary))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("synth", help="write synthetic liver CT/MR exams with MVI ground truth")
    p.add_argument("modality", choices=["ct", "mr"])
    p.add_argument("--out", required=True, help="output directory (dicom/, truth/, clinical/, manifest.json)")
    p.add_argument("--patients", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vendor", choices=["mixed", *VENDORS], default="mixed")
    p.add_argument("--agent", choices=["gd-eob", "extracellular"], default=None,
                   help="MR contrast agent (default: seeded mix, ~65%% gd-eob)")
    p.add_argument("--annotations", choices=["seg", "circle", "sr", "none"], default="seg",
                   help="seg: DICOM SEG; circle: GSPS circles on every tumour slice; sr: TID 1500 circle ROIs")
    p.add_argument("--seg-on", choices=["arterial", "portal", "mixed"], default="mixed",
                   help="phase the annotation is drawn on (mixed: ~20%% portal)")
    p.add_argument("--matrix", type=int, default=256)
    p.add_argument("--thin", action="store_true", help="CT: add 1-1.25 mm recons of the contrast phases")
    p.add_argument("--noise", type=float, default=None, help="CT: HU sd at 5 mm (10); MR: fraction (0.03)")
    p.add_argument("--sign-strength", type=float, default=0.7, help="0..1: how visible MVI signs are")
    p.add_argument("--hard-cases", choices=["mixed", "none", "all"], default="mixed")
    p.add_argument("--realism", choices=["basic", "varied"], default="basic",
                   help="CT: varied = deformed organs, extra vessels, lesion shape/enhancement variety, "
                        "correlated noise (basic: the exams every seed always gave)")
    p.add_argument("--force", action="append", choices=HARD_CASE_NAMES, help="turn a hard case on for all")
    p.add_argument("--without", action="append", choices=HARD_CASE_NAMES, help="turn a hard case off for all")
    p.add_argument("--language", choices=LANGUAGES, help="description language for all exams")
    p.set_defaults(func=cmd_synth)
