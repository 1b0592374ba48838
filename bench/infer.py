"""Inference benchmark, seed 000 Table 6 sizes: one patient = 16 or 49 tumour slices.

One run, same weights, same CPU: ONNX Runtime on the served graph (probability +
in-graph Grad-CAM) in fp32, in every reduced precision the model folder ships (int8
static QDQ, fp16; bf16 is reported as unsupported by the CPU provider), and torch eager
on the same two outputs (``inference_mode``, weights copied from the ONNX initialisers).
Each engine runs in its own subprocess so peak memory (ru_maxrss) is its own; the first
call is a warm-up and not timed; a figure is the median of ``--reps`` calls, and with
``--rounds`` > 1 the median over rounds (the engines interleaved), since the machine is
shared. ``--knobs`` adds int8 runs with ONNX Runtime session config entries. The paper:
GTX 1650 5.2 ms / 8.2 ms and i7-9700 0.389 s / 1.13 s for 16 / 49 slices, 44.7 MB.

Usage: python bench/infer.py [--model models/ct_ap_resnet18/0.2.1] [--variant clinical]
                             [--reps 7] [--rounds 3] [--threads 0] [--knobs] [--append bench/RESULTS.md]
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
#: session config entries tried on the int8 graph (--knobs); names from ONNX Runtime's
#: onnxruntime_session_options_config_keys.h
KNOBS = {
    "int8 no-spin": {"session.intra_op.allow_spinning": "0"},
    "int8 denormal-as-zero": {"session.set_denormal_as_zero": "1"},
    "int8 QDQ unfused": {"session.disable_quant_qdq": "1"},
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _inputs(n: int, clinical: bool):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((n, 3, 256, 256), dtype=np.float32)
    c = rng.random((n, 9), dtype=np.float32) if clinical else None
    return x, c


def _cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    line = next((l for l in text.splitlines() if l.startswith("flags")), "")
    return sorted(f for f in line.split() if "vnni" in f or f.startswith("amx") or "bf16" in f or f == "avx512f")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def child(engine: str, model: Path, variant: str, reps: int, threads: int = 0, config: dict | None = None) -> dict:
    from mvi_node.infer.manifest import load_model

    info = load_model(model)
    v = info.variants[variant]
    base = _rss_mb()
    out: dict = {"engine": engine, "baseline_rss_mb": round(base, 1)}
    if engine.startswith("ort-"):
        import onnxruntime as ort

        precision = engine[4:].split(" ")[0]
        path, digest = v.file_for(precision)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        for k, val in (config or {}).items():
            opts.add_session_config_entry(k, val)
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        out.update(threads=threads or "default", providers=sess.get_providers(), file=path.name, sha256=digest[:12],
                   config=config or {}, onnxruntime=ort.__version__)

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
                return module(torch.from_numpy(x), *([torch.from_numpy(c)] if c is not None else []))
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


def engines(model: Path, variant: str, knobs: bool) -> tuple[list[tuple[str, dict]], dict[str, str]]:
    """(engine, session config) to run, and why an engine is not run (bf16, precisions not shipped)."""
    from mvi_node.infer.manifest import load_model

    v = load_model(model, check_graph=False).variants[variant]
    run: list[tuple[str, dict]] = [("ort-fp32", {})]
    skipped = {}
    for p in ("int8", "fp16"):
        if p in v.precisions:
            run.append((f"ort-{p}", {}))
        else:
            skipped[f"ort-{p}"] = f"{model} ships no {p} copy of {variant}"
    skipped["ort-bf16"] = ("not supported: ONNX Conv takes bfloat16 only from opset 22 and ONNX Runtime's CPU "
                           "provider has no bfloat16 Conv/Relu/Add/MatMul kernels")
    if knobs and "int8" in v.precisions:
        run += [(f"ort-{name}", cfg) for name, cfg in KNOBS.items()]
    run.append(("torch", {}))
    return run, skipped


def checks(model: Path, variant: str) -> dict[str, dict]:
    from mvi_node.infer.manifest import load_model

    v = load_model(model, check_graph=False).variants[variant]
    return {p: {k: c.check.get(k) for k in ("passed", "auc_fp32", "auc", "probability_delta_max",
                                             "gradcam_correlation_mean", "gradcam_top_correlation_mean", "failures")}
            for p, c in v.precisions.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = ROOT / "models" / "ct_ap_resnet18" / "0.2.1"
    ap.add_argument("--model", default=str(default if default.is_dir() else default.with_name("0.2.0")))
    ap.add_argument("--variant", default="clinical")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=1, help="repeat the whole set, engines interleaved; medians over rounds")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads for every engine (0: library default)")
    ap.add_argument("--knobs", action="store_true", help="also int8 with ONNX Runtime session config entries")
    ap.add_argument("--append", help="append a markdown section to this file (e.g. bench/RESULTS.md)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--config", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.model), args.variant, args.reps, args.threads,
                               json.loads(args.config))))
        return 0
    todo, skipped = engines(Path(args.model), args.variant, args.knobs)
    rounds: list[dict[str, dict]] = []
    for r in range(args.rounds):
        got = {}
        for engine, cfg in todo:
            proc = subprocess.run([sys.executable, __file__, "--child", engine, "--model", args.model,
                                   "--variant", args.variant, "--reps", str(args.reps), "--threads", str(args.threads),
                                   "--config", json.dumps(cfg)], capture_output=True, text=True, env=os.environ)
            if proc.returncode != 0:
                skipped[engine] = f"failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
                continue
            got[engine] = json.loads(proc.stdout.strip().splitlines()[-1])
        rounds.append(got)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{e} {g['16']['median_s']:.3f}s" for e, g in got.items()),
              file=sys.stderr)
    results = _median_over_rounds(rounds)
    fp32 = results.get("ort-fp32")
    report = {"cpu": _cpu_name(), "cpu_flags": _cpu_flags(), "cores": os.cpu_count(),
              "load": " ".join(f"{v:.2f}" for v in os.getloadavg()), "model": args.model, "variant": args.variant,
              "reps": args.reps, "rounds": args.rounds, "threads": args.threads, "results": results,
              "skipped": skipped, "checks": checks(Path(args.model), args.variant),
              "vs_fp32_ort": {e: {n: round(fp32[str(n)]["median_s"] / r[str(n)]["median_s"], 2) for n in SIZES}
                              for e, r in results.items()} if fp32 else {},
              "vs_torch": {e: {n: round(results["torch"][str(n)]["median_s"] / r[str(n)]["median_s"], 2) for n in SIZES}
                           for e, r in results.items()} if "torch" in results else {}}
    print(json.dumps(report, indent=2))
    if args.append:
        _append(Path(args.append), report)
    return 0


def _median_over_rounds(rounds: list[dict[str, dict]]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for engine in rounds[0]:
        seen = [r[engine] for r in rounds if engine in r]
        merged = dict(seen[0])
        for n in SIZES:
            merged[str(n)] = {"median_s": round(statistics.median(s[str(n)]["median_s"] for s in seen), 4),
                              "min_s": round(min(s[str(n)]["min_s"] for s in seen), 4),
                              "rounds_s": [s[str(n)]["median_s"] for s in seen]}
        merged["peak_rss_mb"] = max(s["peak_rss_mb"] for s in seen)
        out[engine] = merged
    return out


def _append(path: Path, r: dict) -> None:
    def ratio(table: str, engine: str, n: int) -> str:
        got = r[table].get(engine, {})
        value = got.get(n, got.get(str(n)))  # int keys, or str after a JSON round trip
        return f"{value:.2f}x" if value is not None else "-"

    rows = []
    for engine, res in r["results"].items():
        ratios = " | ".join(ratio("vs_fp32_ort", engine, n) for n in SIZES)
        torch_ratio = " | ".join(ratio("vs_torch", engine, n) for n in SIZES)
        rows.append(f"| {engine} | {res['16']['median_s']:.3f} | {res['49']['median_s']:.3f} | {ratios} | {torch_ratio} | "
                    f"{res['peak_rss_mb']:.0f} |")
    rows += [f"| {e} | - | - | - | - | - | - | - ({why}) |" for e, why in r["skipped"].items()]
    checks = "; ".join(f"{p}: passed={c.get('passed')}, AUC {c.get('auc_fp32')} -> {c.get('auc')}, max prob. delta "
                       f"{c.get('probability_delta_max')}, Grad-CAM r {c.get('gradcam_correlation_mean')}"
                       for p, c in r["checks"].items()) or "no reduced-precision copies"
    text = f"""
## Inference: ct_ap_resnet18 per patient, fp32 / int8 / fp16 ORT vs torch (bench/infer.py)

{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {r['cores']} shared CPU cores ({r['cpu']}; flags {' '.join(r['cpu_flags'])}),
model `{r['model']}` variant `{r['variant']}` (probability + in-graph Grad-CAM), median of {r['reps']} calls after one
warm-up, each engine in its own process, median over {r['rounds']} round(s) with the engines interleaved; threads
{r['threads'] or 'library default'}. Load average at the end: {r['load']}. The machine is shared with other engineers' jobs.

| engine | 16 slices (s) | 49 slices (s) | vs fp32 ORT 16 | vs fp32 ORT 49 | vs torch 16 | vs torch 49 | peak RSS (MB) |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Accuracy checks of the shipped copies (manifest): {checks}.
Paper: i7-9700 CPU {PAPER[16]['cpu_s']} s / {PAPER[49]['cpu_s']} s, GTX 1650 {PAPER[16]['gpu_s'] * 1000:.1f} / {PAPER[49]['gpu_s'] * 1000:.1f} ms.
Command: `python bench/infer.py --reps {r['reps']} --rounds {r['rounds']} --threads {r['threads']}{' --knobs' if any('no-spin' in e for e in r['results']) else ''} --append bench/RESULTS.md`.
"""
    with path.open("a", encoding="utf-8") as fh:
        if path.stat().st_size == 0 if path.exists() else True:
            fh.write("# Benchmark results\n")
        fh.write(text)


if __name__ == "__main__":
    sys.exit(main())
