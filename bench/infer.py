"""Inference benchmark, seed 000 Table 6 sizes: one patient = 16 or 49 tumour slices.

Same run, same weights, same CPU: ONNX Runtime (the served graph: probability +
in-graph Grad-CAM) against torch eager on the same two outputs (``inference_mode``,
weights copied from the ONNX initialisers). Each engine runs in its own subprocess so
peak memory (ru_maxrss) is its own; the first call is a warm-up and not timed; the
figure is the median of ``--reps`` calls. The paper: GTX 1650 5.2 ms / 8.2 ms and
i7-9700 0.389 s / 1.13 s for 16 / 49 slices, 44.7 MB.

Usage: python bench/infer.py [--model models/ct_ap_resnet18/0.1.0] [--variant clinical]
                             [--reps 7] [--append bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SIZES = (16, 49)
PAPER = {16: {"gpu_s": 0.0052, "cpu_s": 0.389}, 49: {"gpu_s": 0.0082, "cpu_s": 1.13}}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _inputs(n: int, clinical: bool):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((n, 3, 256, 256), dtype=np.float32)
    c = rng.random((n, 9), dtype=np.float32) if clinical else None
    return x, c


def child(engine: str, model: Path, variant: str, reps: int, threads: int = 0) -> dict:
    from mvi_node.infer.manifest import load_model

    info = load_model(model)
    v = info.variants[variant]
    base = _rss_mb()
    out: dict = {"engine": engine, "baseline_rss_mb": round(base, 1)}
    if engine == "onnxruntime":
        import onnxruntime as ort

        from mvi_node.infer.engine import pick_providers

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(v.path), opts, providers=pick_providers())
        out["threads"] = threads or "default"
        out["providers"] = sess.get_providers()

        def run(x, c):
            feed = {"image": x, **({"clinical": c} if c is not None else {})}
            return sess.run(["probability", "gradcam"], feed)
    else:
        import onnx
        import torch
        from onnx import numpy_helper

        from mvi_node.recipes.ct_ap_resnet18.network import MviResNet18, export_module

        if threads:
            torch.set_num_threads(threads)
        net = MviResNet18(v.needs_clinical).eval()
        module = export_module(net).eval()
        _load_onnx_weights(module, onnx.load(str(v.path)), numpy_helper, torch)
        out["threads"] = torch.get_num_threads()

        def run(x, c):
            with torch.inference_mode():
                return module(torch.from_numpy(x), *( [torch.from_numpy(c)] if c is not None else []))
    for n in SIZES:
        x, c = _inputs(n, v.needs_clinical)
        run(x, c)  # warm-up
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            run(x, c)
            times.append(time.perf_counter() - t)
        out[str(n)] = {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4)}
    out["peak_rss_mb"] = round(_rss_mb(), 1)
    return out


def _load_onnx_weights(module, graph, numpy_helper, torch) -> None:
    """Copy ONNX initialisers into the torch module by name where names match (the legacy
    exporter keeps parameter names); unmatched ones keep their random values (timing only)."""
    inits = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    state = module.state_dict()
    for k in state:
        if k in inits and tuple(inits[k].shape) == tuple(state[k].shape):
            state[k] = torch.from_numpy(inits[k].copy())
    module.load_state_dict(state)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "ct_ap_resnet18" / "0.1.0"))
    ap.add_argument("--variant", default="clinical")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads for both engines (0: library default)")
    ap.add_argument("--append", help="append a markdown section to this file (e.g. bench/RESULTS.md)")
    ap.add_argument("--child", choices=["onnxruntime", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.model), args.variant, args.reps, args.threads)))
        return 0
    results = {}
    for engine in ("onnxruntime", "torch"):
        proc = subprocess.run([sys.executable, __file__, "--child", engine, "--model", args.model,
                               "--variant", args.variant, "--reps", str(args.reps), "--threads", str(args.threads)],
                              capture_output=True, text=True, check=True, env=os.environ)
        results[engine] = json.loads(proc.stdout.strip().splitlines()[-1])
    report = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "load": " ".join(f"{v:.2f}" for v in os.getloadavg()),
              "model": args.model, "variant": args.variant, "reps": args.reps, "threads": args.threads,
              "results": results,
              "speedup": {n: round(results["torch"][str(n)]["median_s"] / results["onnxruntime"][str(n)]["median_s"], 2)
                          for n in SIZES}}
    print(json.dumps(report, indent=2))
    if args.append:
        _append(Path(args.append), report)
    return 0


def _append(path: Path, r: dict) -> None:
    o, t = r["results"]["onnxruntime"], r["results"]["torch"]
    rows = "\n".join(
        f"| {n} | {o[str(n)]['median_s']:.3f} | {t[str(n)]['median_s']:.3f} | {r['speedup'][n]:.2f}x | "
        f"{PAPER[n]['cpu_s']:.3f} | {PAPER[n]['gpu_s'] * 1000:.1f} ms |" for n in SIZES)
    text = f"""
## Inference: ct_ap_resnet18 per patient (bench/infer.py)

{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {r['cores']} shared CPU cores ({r['cpu']}), variant `{r['variant']}`
(probability + in-graph Grad-CAM), median of {r['reps']} after one warm-up, each engine in its own process.
ONNX Runtime providers {o.get('providers')}, threads {o.get('threads')}; torch eager {t.get('threads')} threads,
`inference_mode`. Load average at the start: {r['load']}.

| slices | ONNX Runtime (s) | torch eager (s) | ORT speed-up | paper i7-9700 CPU (s) | paper GTX 1650 |
|---|---|---|---|---|---|
{rows}

Peak RSS (whole process, incl. Python + libraries): ONNX Runtime {o['peak_rss_mb']:.0f} MB
(baseline before the session {o['baseline_rss_mb']:.0f} MB); torch eager {t['peak_rss_mb']:.0f} MB (baseline
{t['baseline_rss_mb']:.0f} MB). Paper: 44.7 MB (GPU memory).
Command: `python bench/infer.py --reps {r['reps']} --threads {r['threads']} --append bench/RESULTS.md`.
"""
    with path.open("a", encoding="utf-8") as fh:
        if path.stat().st_size == 0 if path.exists() else True:
            fh.write("# Benchmark results\n")
        fh.write(text)


if __name__ == "__main__":
    sys.exit(main())
