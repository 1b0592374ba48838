"""Segmentation metrics through the served path (ONNX Runtime, the node's own selection). Torch-free.

Shared by the CT and MR segmenters' trainers (``liver_tumor_seg``, ``liver_tumor_seg_mr``).
Per exam, against the generator's truth masks (``truth/<accession>/``, brought into the
node's slice order through ``geometry.json``): tumour Dice (all lesions together, after
post-processing), liver Dice (liver with its lesions), and per truth lesion whether an
automatic lesion overlaps it; automatic lesions that overlap no truth lesion are false
positives.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np


class OrtRunner:
    """A :class:`~mvi_node.infer.recipe.ModelRunner` over one ONNX file (CPU)."""

    def __init__(self, path: Path | str, threads: int = 0) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.variants = {"segmentation": None}
        self.input_channels = int(self.sess.get_inputs()[0].shape[1])  # the graph's channel axis

    def threshold(self, variant: str) -> float:
        return 0.5

    def run(self, variant, feeds, outputs, batched=()):
        return list(self.sess.run(list(outputs), {k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()}))

    def arrays(self, variant):
        raise NotImplementedError


def dice(a: np.ndarray, b: np.ndarray) -> float | None:
    s = int(a.sum()) + int(b.sum())
    return None if s == 0 else 2.0 * float((a & b).sum()) / s


def truth_on_series(root: Path, entry: Mapping[str, Any], geo) -> tuple[np.ndarray, np.ndarray]:
    """(liver bool, lesion index) of an exam on the node's sorted grid of its target series (the
    CT arterial phase, the MR portal venous one: the generator's truth grid)."""
    tdir = root / entry["truth"]["dir"]
    lesions = np.load(tdir / "lesions.npy")
    liver = np.load(tdir / "liver.npy").astype(bool)
    g = json.loads((tdir / "geometry.json").read_text(encoding="utf-8"))
    tz = [round(float(p[2]), 2) for p in g["image_position_patient"]]
    order = [tz.index(round(float(p[2]), 2)) for p in geo.positions]
    return liver[order], lesions[order]


def exam_metrics(seg, truth_liver: np.ndarray, truth_lesions: np.ndarray, entry: Mapping[str, Any],
                 min_diameter_mm: float = 10.0) -> dict[str, Any]:
    pred_t = seg.lesion_map > 0
    pred_l = seg.liver | pred_t
    out: dict[str, Any] = {"accession": entry["accession_number"], "vendor": entry["vendor"],
                           "tumour_dice": dice(pred_t, truth_lesions > 0),
                           "liver_dice": dice(pred_l, truth_liver | (truth_lesions > 0)),
                           "lesions_found": len(seg.lesions), "seconds": seg.info.get("seconds")}
    truth = []
    for k, les in enumerate(entry["lesions"], start=1):
        m = truth_lesions == k
        if not m.any():
            continue
        hit = np.unique(seg.lesion_map[m & pred_t])
        truth.append({"lesion": k, "diameter_mm": les["diameter_mm"], "detected": bool(len(hit)),
                      "large": les["diameter_mm"] >= min_diameter_mm})
    fp = [l.rank for l in seg.lesions if not (truth_lesions[seg.lesion_map == l.rank] > 0).any()]
    out["truth_lesions"] = truth
    out["false_positives"] = len(fp)
    return out


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def mean(key):
        vals = [r[key] for r in rows if r.get(key) is not None]
        return round(float(np.mean(vals)), 4) if vals else None

    large = [t for r in rows for t in r["truth_lesions"] if t["large"]]
    return {"exams": len(rows), "tumour_dice_mean": mean("tumour_dice"),
            "tumour_dice_median": round(float(np.median([r["tumour_dice"] for r in rows if r["tumour_dice"] is not None])), 4)
            if rows else None,
            "liver_dice_mean": mean("liver_dice"),
            "lesions_10mm": len(large), "detected_10mm": sum(t["detected"] for t in large),
            "sensitivity_10mm": round(sum(t["detected"] for t in large) / len(large), 4) if large else None,
            "false_positives_per_exam": round(float(np.mean([r["false_positives"] for r in rows])), 3) if rows else None,
            "seconds_per_exam": mean("seconds")}


def exam_series(root: Path, entry: Mapping[str, Any], recipe, phases: bool = True):
    """(target geometry, other phases' geometries by role) of one generated exam, through
    the node's own selection; the target is the SEG's source, the recipe's first role
    (``phases`` False: no other phase, as for an exam that has the target series alone)."""
    from mvi_node.roi import series_geometry
    from mvi_node.select.engine import select_path

    [exam] = select_path(root / entry["dicom_dir"])
    winners = exam.winners()
    geo = series_geometry(list(winners[recipe.requires[0]].datasets))
    others = {r: series_geometry(list(winners[r].datasets)) for r in recipe.channel_roles[1:]
              if r in winners and phases}
    return geo, others


def evaluate_exams(root: Path, entries: list[Mapping[str, Any]], recipe, runner, identity: Mapping[str, Any],
                   log=print, phases: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each exam under ``root`` through selection and the served segmentation, scored
    (``phases`` False: the model's extra phase channels left blank, as for an exam that
    has the target series alone)."""
    rows = []
    for entry in entries:
        t0 = time.perf_counter()
        geo, others = exam_series(root, entry, recipe, phases)
        seg = recipe.segment(geo, runner, identity, phases=others)
        liver, lesions = truth_on_series(root, entry, geo)
        row = exam_metrics(seg, liver, lesions, entry)
        rows.append(row)
        log(f"  {row['accession']} ({row['vendor']}): tumour Dice {row['tumour_dice']}, liver Dice "
            f"{row['liver_dice']}, found {row['lesions_found']}, FP {row['false_positives']} "
            f"({time.perf_counter() - t0:.1f} s)")
    return rows, summarize(rows)
