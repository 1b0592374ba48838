"""``mvi-node segment PATH --out DIR [--json]``: the served segmentation model on every exam
under PATH, one DICOM SEG per exam into DIR, and per exam the lesions found."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def segment_path(path: Path, out: Path, engine) -> list[dict[str, Any]]:
    """Per exam: the series segmented, the lesions (volume mL, maximum diameter mm), the SEG written."""
    from mvi_node.infer.recipe import NO_SERIES
    from mvi_node.report.outputs import save_outputs
    from mvi_node.report.seg import build_seg
    from mvi_node.roi.automatic import Segmentation
    from mvi_node.select.engine import select_path

    records = []
    for exam in select_path(path):
        winners = exam.winners()
        base = {"study_instance_uids": list(exam.study_uids), "modalities": sorted(exam.modalities)}
        chosen = [(r, m) for r, m in engine.segmentation.segmenters if r.modalities & exam.modalities]
        if not chosen:
            records.append({**base, "outcome": "no segmentation model for this exam", "lesions": [], "seg": None,
                            "reasons": [f"served: {', '.join(r.name for r, _m in engine.segmentation.segmenters)}"]})
            continue
        recipe, model = chosen[0]
        ident = engine.identity(recipe.name)
        rec = {**base, "recipe": recipe.name, "model_version": ident.get("model_version"),
               "model_sha256": ident.get("sha256"), "roi_source": f"automatic: {recipe.name} {ident.get('model_version')}"}
        qualified, why = recipe.qualifies(winners)
        if not qualified:
            records.append({**rec, "outcome": NO_SERIES, "reasons": [why], "lesions": [], "seg": None})
            continue
        unit = winners[recipe.requires[0]]
        found = engine.segmentation.segment(list(unit.datasets), {r: u.datasets for r, u in winners.items()})
        rec["series_instance_uid"] = unit.series_uid
        rec["series_description"] = str(unit.datasets[0].get("SeriesDescription", "") or "")
        if not isinstance(found, Segmentation):
            records.append({**rec, "outcome": "failed", "reasons": list(found.reasons), "lesions": [], "seg": None})
            continue
        # the model that ran: the served one, or a fallback for an exam without a phase it reads
        rec.update({"model_version": found.model.get("model_version"), "model_sha256": found.model.get("sha256"),
                    "roi_source": found.source})
        rec.update({"lesions": [l.as_dict() for l in found.lesions], "reasons": list(found.reasons),
                    "liver_ml": found.summary()["liver_ml"], "info": dict(found.info)})
        if found.found:
            ds = build_seg(found)
            [written] = save_outputs([ds], out / str(ds.StudyInstanceUID))
            rec.update({"outcome": "ok", "seg": str(written), "seg_sop_instance_uid": str(ds.SOPInstanceUID)})
        else:
            rec.update({"outcome": (found.reasons[0].split(" (")[0] if found.reasons else "no lesion found"),
                        "seg": None})
        records.append(rec)
    return records


def cmd_segment(args: argparse.Namespace) -> int:
    from mvi_node.commands.engine_args import cli_engine, model_roots

    engine = cli_engine(args)
    if engine is None:
        return 2
    if not engine.segmentation:
        print(f"no segmentation model served from {', '.join(map(str, model_roots(args)))}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = segment_path(Path(args.path), out, engine)
    if args.json:
        print(json.dumps({"providers": engine.providers, "exams": records}, indent=2))
        return 0
    for r in records:
        head = f"{','.join(r['study_instance_uids'])}: {r['outcome']}"
        if r.get("series_instance_uid"):
            head += f"; series {r['series_instance_uid']} ({r.get('series_description') or 'no description'})"
        if r.get("roi_source"):
            head += f" [{r['roi_source']} sha256 {str(r.get('model_sha256'))[:12]}]"
        print(head)
        for les in r["lesions"]:
            print(f"  {les['tracking_id']}: {les['volume_ml']:.2f} mL, max diameter {les['max_diameter_mm']:.1f} mm, "
                  f"slices {les['slices'][0]}-{les['slices'][1]}")
        for why in r.get("reasons", []):
            print(f"  ({why})")
        print(f"  SEG: {r['seg']}" if r.get("seg") else "  no SEG written")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("segment", help="automatic liver and tumour segmentation of a folder: one DICOM SEG "
                                              "per exam, the lesions found")
    p.add_argument("path", help="folder of DICOM files (one or more exams)")
    p.add_argument("--out", required=True, help="folder for the SEGs (<StudyInstanceUID>/<SOPInstanceUID>.dcm)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--models", action="append", help="model root (repeatable; default: the repository's models/)")
    p.add_argument("--providers", help="ONNX Runtime providers in order (default CUDAExecutionProvider,CPUExecutionProvider)")
    p.set_defaults(func=cmd_segment)
