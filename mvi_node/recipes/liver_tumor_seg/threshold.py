"""Choose a CT segmenter's tumour threshold on validation exams, then score it on the test set. Torch-free.

``python -m mvi_node.recipes.liver_tumor_seg.threshold --model models/liver_tumor_seg/0.3.0 --work DIR``

The network runs once per exam (ONNX Runtime, the node's own selection and sliding
window); every threshold is then applied to the same probabilities, post-processed as
served, and scored against the generator's truth (:mod:`mvi_node.recipes.seg_evaluate`).
The threshold is chosen on the **validation** exams alone (another seed than training
and test), by mean tumour Dice: the served threshold stays unless another gains at
least :data:`MARGIN` (24 exams: one exam's lesion found or lost moves the mean by ~0.03,
so a smaller gain is one exam's luck); among those that do, the best, ties to the higher
threshold (fewer false positives). The test exams are scored at every threshold only to
be reported, never to choose.
Why sweep below 0.5: the tumour class competes with liver and background, so a faint
lesion whose tumour probability peaks at 0.3-0.45 is lost at 0.5 (for 0.3.0 it made no
difference: bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from mvi_node.recipes.seg_evaluate import OrtRunner, exam_metrics, exam_series, summarize, truth_on_series

THRESHOLDS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
#: the least gain in validation mean tumour Dice that moves the served threshold
MARGIN = 0.02


def sweep(root: Path, entries: Sequence[Mapping[str, Any]], recipe, runner, identity: Mapping[str, Any],
          thresholds: Sequence[float] = THRESHOLDS, log=print) -> dict[float, list[dict[str, Any]]]:
    """Per threshold, the per-exam metrics of every exam (the network run once per exam)."""
    rows: dict[float, list[dict[str, Any]]] = {t: [] for t in thresholds}
    for entry in entries:
        t0 = time.perf_counter()
        geo, others = exam_series(root, entry, recipe)
        probs, info = recipe.model_probabilities(geo, runner, phases=others)
        liver, lesions = truth_on_series(root, entry, geo)
        for t in thresholds:
            seg = recipe.from_probabilities(probs, info, geo, identity, t)
            rows[t].append(exam_metrics(seg, liver, lesions, entry))
        log(f"  {entry['accession_number']}: " + ", ".join(
            f"{t:g} {rows[t][-1]['tumour_dice'] or 0:.3f}" for t in thresholds) + f" ({time.perf_counter() - t0:.1f} s)")
    return rows


def choose(summaries: Mapping[float, Mapping[str, Any]], served: float = 0.5, margin: float = MARGIN) -> float:
    """``served`` unless another threshold's mean tumour Dice beats it by ``margin``; then
    the best of those (a tie goes to the higher threshold)."""
    def dice(t: float) -> float:
        return summaries[t]["tumour_dice_mean"] or 0.0

    base = dice(served) if served in summaries else 0.0
    better = [t for t in summaries if dice(t) >= base + margin]
    return max(better, key=lambda t: (dice(t), t)) if better else served


def main(argv: Sequence[str] | None = None) -> int:
    from mvi_node.infer.manifest import load_model
    from mvi_node.recipes.liver_tumor_seg.recipe import LiverTumorSeg
    from mvi_node.recipes.liver_tumor_seg.train import write_test_exams

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a liver_tumor_seg model folder (model.onnx, manifest.toml)")
    p.add_argument("--work", required=True, help="folder for the synthetic exams and the results")
    p.add_argument("--val-exams", type=int, default=24)
    p.add_argument("--val-seed", type=int, default=9300, help="validation seed (not training's 5000, not test's 9100)")
    p.add_argument("--test-exams", type=int, default=24)
    p.add_argument("--test-seed", type=int, default=9100)
    p.add_argument("--thresholds", default=",".join(map(str, THRESHOLDS)))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--served", type=float, help="the threshold served now (default: the model manifest's)")
    args = p.parse_args(argv)
    thresholds = tuple(float(t) for t in args.thresholds.split(","))
    work, model = Path(args.work), load_model(args.model)
    recipe, variant = LiverTumorSeg(), model.variants["segmentation"]
    runner = OrtRunner(variant.path, threads=args.threads)
    identity = model.identity("segmentation")
    result: dict[str, Any] = {"model": str(model.folder), "thresholds": list(thresholds)}
    for name, n, seed in (("validation", args.val_exams, args.val_seed), ("test", args.test_exams, args.test_seed)):
        root = work / f"{name}-{seed}"
        print(f"{name}: {n} varied exams of seed {seed}", flush=True)
        entries = write_test_exams(root, n, seed)
        rows = sweep(root, entries, recipe, runner, identity, thresholds)
        result[name] = {"seed": seed, "exams": n, "vendors": sorted({e["vendor"] for e in entries}),
                        "by_threshold": {str(t): summarize(r) for t, r in rows.items()},
                        "per_exam": {str(t): r for t, r in rows.items()}}
    val = {float(t): s for t, s in result["validation"]["by_threshold"].items()}
    served = args.served if args.served is not None else variant.threshold
    result["served"], result["margin"] = served, MARGIN
    result["chosen"] = choose(val, served)
    (work / "threshold_sweep.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print("| threshold | validation tumour Dice (median) | sens >= 10 mm | FP/exam | test tumour Dice (median) | "
          "sens >= 10 mm | FP/exam |")
    for t in thresholds:
        v, s = result["validation"]["by_threshold"][str(t)], result["test"]["by_threshold"][str(t)]
        print(f"| {t:g}{' (chosen)' if t == result['chosen'] else ''} | {v['tumour_dice_mean']} "
              f"({v['tumour_dice_median']}) | {v['detected_10mm']}/{v['lesions_10mm']} | "
              f"{v['false_positives_per_exam']} | {s['tumour_dice_mean']} ({s['tumour_dice_median']}) | "
              f"{s['detected_10mm']}/{s['lesions_10mm']} | {s['false_positives_per_exam']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
