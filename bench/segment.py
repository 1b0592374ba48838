"""Segmentation benchmark: the served liver_tumor_seg on one 300-slice 512 x 512 CT series.

Same run, same CPU, same pre- and post-processing (HU, resampling to the model grid,
window, sliding window, back to the series grid, post-processing): the tile function
is ONNX Runtime (what the node serves) or torch eager on the MONAI network with the
weights the trainer kept (``--weights``, ``/tmp/liver_tumor_seg-<version>.pt``; not
shipped). Each engine runs in its own subprocess so its peak memory (ru_maxrss) is its
own; the figure is the median of ``--reps`` runs after one warm-up. A model with a
second input channel (0.2.0: the portal venous phase) also reads a second series of the
same geometry and frame of reference, so the timing includes that phase's read.

``--mr``: the served liver_tumor_seg_mr on one synthetic multi-sequence MR exam (matrix
``--matrix``, gadoxetate, written as DICOM and selected by the node): the timing then
includes the MR preprocessing of its four sequences (N4, scaling, registration check,
resampling onto the portal venous grid), reported apart, as serving runs it.

Usage: python bench/segment.py [--model models/liver_tumor_seg/<served>] [--weights W.pt]
                               [--slices 300] [--reps 3] [--threads 2] [--append bench/RESULTS.md]
       python bench/segment.py --mr [--matrix 256] [--weights /tmp/liver_tumor_seg_mr-0.1.0.pt] ...
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(engine: str, model: Path, series: Path, reps: int, threads: int, weights: str | None) -> dict:
    import numpy as np
    import pydicom

    from mvi_node.infer.manifest import load_model
    from mvi_node.recipes.liver_tumor_seg.recipe import LiverTumorSeg
    from mvi_node.roi import series_geometry

    info = load_model(model)
    recipe = LiverTumorSeg()
    geo = series_geometry([pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(series.glob("*.dcm"))])
    phases = {}
    if (series.parent / "portal").is_dir():
        portal = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted((series.parent / "portal").glob("*.dcm"))]
        for ds in portal:  # the second phase of one exam: one frame of reference
            ds.FrameOfReferenceUID = geo.datasets[0].FrameOfReferenceUID
        phases["ct_portal_venous"] = series_geometry(portal)
    out: dict = {"engine": engine, "slices": geo.shape[0], "matrix": geo.shape[1], "phases": 1 + len(phases)}
    if engine == "onnxruntime":
        from mvi_node.recipes.liver_tumor_seg.evaluate import OrtRunner

        runner = OrtRunner(info.variants["segmentation"].path, threads=threads)
    else:
        import torch

        from mvi_node.recipes.liver_tumor_seg.network import build

        torch.set_num_threads(threads)
        channels = int(info.variants["segmentation"].inputs["image"][1])
        net = build(in_channels=channels).eval()
        net.load_state_dict(torch.load(weights, map_location="cpu"))

        class TorchRunner:
            input_channels = channels

            def run(self, variant, feeds, outputs, batched=()):
                with torch.inference_mode():
                    return [torch.softmax(net(torch.from_numpy(feeds["image"])), 1).numpy()]

        runner = TorchRunner()
    ident = info.identity("segmentation")
    times, infos = [], []
    for i in range(reps + 1):
        t0 = time.perf_counter()
        seg = recipe.segment(geo, runner, ident, phases=phases)
        if i:
            times.append(time.perf_counter() - t0)
            infos.append(seg.info)
    out.update({"median_s": round(statistics.median(times), 2), "runs_s": [round(t, 2) for t in times],
                "peak_rss_mb": round(_rss_mb(), 1), "threads": threads, "tiles": infos[-1]["tiles"],
                "patch": infos[-1]["patch"], "overlap": infos[-1]["overlap"], "model_grid": infos[-1]["model_grid"],
                "lesions": len(seg.lesions)})
    del np
    return out


def mr_child(engine: str, model: Path, exam_dir: Path, reps: int, threads: int, weights: str | None) -> dict:
    """One engine on the MR exam: the served recipe's segment() (preprocessing included)."""
    from mvi_node.infer.manifest import load_model
    from mvi_node.recipes.liver_tumor_seg_mr.recipe import CHANNEL_ROLES, ROLE, LiverTumorSegMr
    from mvi_node.recipes.seg_evaluate import OrtRunner
    from mvi_node.roi import series_geometry
    from mvi_node.select.engine import select_path

    info = load_model(model)
    recipe = LiverTumorSegMr()
    [exam] = select_path(exam_dir)
    winners = exam.winners()
    geo = series_geometry(list(winners[ROLE].datasets))
    phases = {r: series_geometry(list(winners[r].datasets)) for r in CHANNEL_ROLES[1:] if r in winners}
    channels = int(info.variants["segmentation"].inputs["image"][1])
    if engine == "onnxruntime":
        runner = OrtRunner(info.variants["segmentation"].path, threads=threads)
    else:
        import torch

        from mvi_node.recipes.seg_network import build_unet

        torch.set_num_threads(threads)
        net = build_unet(in_channels=channels).eval()
        net.load_state_dict(torch.load(weights, map_location="cpu"))

        class TorchRunner:
            input_channels = channels

            def run(self, variant, feeds, outputs, batched=()):
                with torch.inference_mode():
                    return [torch.softmax(net(torch.from_numpy(feeds["image"])), 1).numpy()]

        runner = TorchRunner()
    ident = info.identity("segmentation")
    times, prep, infos = [], [], []
    for i in range(reps + 1):
        t0 = time.perf_counter()
        seg = recipe.segment(geo, runner, ident, phases=phases)
        if i:
            times.append(time.perf_counter() - t0)
            prep.append(sum(seg.info.get("mr_timings", {}).values()))
            infos.append(seg.info)
    return {"engine": engine, "series_grid": list(geo.shape), "sequences": 1 + len(phases),
            "median_s": round(statistics.median(times), 2), "runs_s": [round(t, 2) for t in times],
            "mr_preprocessing_median_s": round(statistics.median(prep), 2),
            "peak_rss_mb": round(_rss_mb(), 1), "threads": threads, "tiles": infos[-1]["tiles"],
            "patch": infos[-1]["patch"], "overlap": infos[-1]["overlap"], "model_grid": infos[-1]["model_grid"],
            "lesions": len(seg.lesions)}


def mr_main(a) -> int:
    """The MR benchmark: one exam, each engine in its own subprocess, a table for RESULTS.md."""
    import datetime as dt
    import os

    from mvi_node.infer.manifest import load_model
    from mvi_node.synth import make_exam

    if not a.model:
        from mvi_node.infer.registry import ModelRegistry

        a.model = str(ModelRegistry().get("liver_tumor_seg_mr").folder)
    if a.child:
        print(json.dumps(mr_child(a.child[0], Path(a.model), Path(a.child[1]), a.reps, a.threads, a.weights)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-seg-mr-"))
    entry = make_exam(work, "mr", 9400, 0, vendor="siemens", agent="gd-eob", matrix=a.matrix, hard_cases="none",
                      annotations="none")
    rows = []
    for engine in ("onnxruntime", *(["torch"] if a.weights else [])):
        cmd = [sys.executable, __file__, "--mr", "--model", a.model, "--reps", str(a.reps), "--threads",
               str(a.threads), "--child", engine, str(work / entry["dicom_dir"]),
               *(["--weights", a.weights] if a.weights else [])]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]))
    if a.append:
        version = load_model(Path(a.model)).version
        r0 = rows[0]
        ratio = (f" torch eager / ONNX Runtime: {rows[1]['median_s'] / r0['median_s']:.2f}x (whole segment call), "
                 f"{(rows[1]['median_s'] - rows[1]['mr_preprocessing_median_s']) / max(1e-9, r0['median_s'] - r0['mr_preprocessing_median_s']):.2f}x "
                 "(without the MR preprocessing)." if len(rows) > 1 else "")
        lines = ["", f"## Segmentation: liver_tumor_seg_mr {version} on a {r0['sequences']}-sequence MR exam "
                 f"(bench/segment.py --mr)", "",
                 f"{dt.date.today().isoformat()}, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} at the "
                 f"end; {platform.processor() or platform.machine()}, {a.threads} threads; command `python "
                 f"bench/segment.py --mr --matrix {a.matrix} --reps {a.reps}{' --weights W.pt' if a.weights else ''}`. "
                 f"Synthetic Siemens gadoxetate exam (seed 9400), portal venous target {r0['series_grid']} "
                 "(slices, rows, cols; 3 mm), with arterial, transitional and T2 (6 mm) registered onto it. "
                 "Median of "
                 f"{a.reps} runs after a warm-up of the served `segment()`: MR preprocessing (N4, body-percentile "
                 "scaling, registration check, resampling; the same in both rows) + resampling to 4 x 2.5 x 2.5 mm + "
                 f"sliding window + back to the series grid + post-processing. Tiles {r0['patch']} model voxels, "
                 f"overlap {r0['overlap']}, Gaussian blending, {r0['tiles']} tiles per axis on a model grid of "
                 f"{r0['model_grid']}; each engine in its own process (peak RSS its own).{ratio}", "",
                 "| engine | median s | runs s | of which MR preprocessing s | peak RSS MB |", "|---|---|---|---|---|"]
        lines += [f"| {r['engine']} | {r['median_s']} | {r['runs_s']} | {r['mr_preprocessing_median_s']} | "
                  f"{r['peak_rss_mb']} |" for r in rows]
        with open(a.append, "a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", help="model folder (default: the version the node serves)")
    p.add_argument("--weights", help="torch state dict of the same model (torch eager run); absent: ONNX Runtime only")
    p.add_argument("--slices", type=int, default=300)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--append")
    p.add_argument("--child", nargs=2, metavar=("ENGINE", "SERIES"))
    p.add_argument("--mr", action="store_true", help="the MR segmenter on a multi-sequence MR exam")
    p.add_argument("--matrix", type=int, default=256, help="--mr: the exam's matrix")
    a = p.parse_args()
    if a.mr:
        return mr_main(a)
    if not a.model:
        from mvi_node.infer.registry import ModelRegistry

        a.model = str(ModelRegistry().get("liver_tumor_seg").folder)
    if a.child:
        print(json.dumps(child(a.child[0], Path(a.model), Path(a.child[1]), a.reps, a.threads, a.weights)))
        return 0
    from mvi_node.synth.plain_series import plain_ct_series

    work = Path(tempfile.mkdtemp(prefix="bench-seg-"))
    plain_ct_series(work / "ct", slices=a.slices, matrix=512, seed=300)
    from mvi_node.infer.manifest import load_model

    channels = int(load_model(Path(a.model)).variants["segmentation"].inputs["image"][1])
    if channels > 1:
        plain_ct_series(work / "portal", slices=a.slices, matrix=512, seed=301)
    rows = []
    for engine in ("onnxruntime", *(["torch"] if a.weights else [])):
        cmd = [sys.executable, __file__, "--model", a.model, "--reps", str(a.reps), "--threads", str(a.threads),
               "--child", engine, str(work / "ct"), *(["--weights", a.weights] if a.weights else [])]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]))
    if a.append:
        version = load_model(Path(a.model)).version
        what = "one" if channels == 1 else f"{channels} phases of a"
        lines = ["", f"## Segmentation: liver_tumor_seg {version} on {what} {a.slices}-slice 512x512 CT series "
                 "(bench/segment.py)",
                 "", f"{platform.processor() or platform.machine()}, {a.threads} threads; median of {a.reps} runs "
                 "after a warm-up; read + resample + window + sliding window + back to the series grid + "
                 "post-processing. Tiles "
                 f"{rows[0]['patch']} model voxels (5 x 2.5 x 2.5 mm), overlap {rows[0]['overlap']}, Gaussian "
                 f"blending, {rows[0]['tiles']} tiles per axis on a model grid of {rows[0]['model_grid']}.", "",
                 "| engine | median s | runs s | peak RSS MB |", "|---|---|---|---|"]
        lines += [f"| {r['engine']} | {r['median_s']} | {r['runs_s']} | {r['peak_rss_mb']} |" for r in rows]
        with open(a.append, "a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
