"""GPU inference benchmark: per-exam latency and throughput at batch sizes 1-32.

Runs the served ct_ap_resnet18 graph (probability + in-graph Grad-CAM) on the CUDA
execution provider (and TensorRT when the installed onnxruntime offers it) through the
engine's own IO binding (:func:`mvi_node.infer.precision.run_bound`): inputs are copied
to the device once per call and outputs allocated there. For each provider, precision
(fp32 and the copies the model ships whose check passed and the provider runs: fp16 on
CUDA and TensorRT) and batch size: the median latency of one batch, slices
per second, and one exam of 16 and of 49 slices run in batches of that size, as the
engine runs it (``Engine(batch_size=...)``).

On a machine without a GPU provider it says so and exits 0.

Usage: python bench/gpu.py [--model models/ct_ap_resnet18/0.2.1] [--variant clinical]
                           [--batches 1,2,4,8,16,32] [--reps 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _feeds(n: int, clinical: bool):
    import numpy as np

    rng = np.random.default_rng(0)
    feed = {"image": rng.random((n, 3, 256, 256), dtype=np.float32)}
    if clinical:
        feed["clinical"] = rng.random((n, 9), dtype=np.float32)
    return feed


def _time(fn, reps: int) -> float:
    fn()  # warm-up (TensorRT builds its engine here)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench(model: Path, variant: str, batches: list[int], reps: int) -> dict:
    import onnxruntime as ort

    from mvi_node.infer.manifest import load_model
    from mvi_node.infer.precision import FAST_ON, GPU_PROVIDERS, provider_options, run_bound

    available = ort.get_available_providers()
    gpus = [p for p in GPU_PROVIDERS if p in available]
    out = {"onnxruntime": ort.__version__, "providers_available": available, "model": str(model), "variant": variant,
           "runs": []}
    if not gpus:
        return out
    v = load_model(model, check_graph=False).variants[variant]
    for provider in gpus:
        precisions = ["fp32"] + [p for p in FAST_ON[provider] if p in v.precisions and v.precisions[p].passed]
        for precision in precisions:
            path, digest = v.file_for(precision)
            chain = [provider, "CPUExecutionProvider"]
            sess = ort.InferenceSession(str(path), providers=chain,
                                        provider_options=provider_options(chain, precision, str(ROOT / "var" / "trt")))
            for b in batches:
                feed = _feeds(b, v.needs_clinical)
                latency = _time(lambda: run_bound(sess, feed, ["probability", "gradcam"]), reps)
                exams = {}
                for slices in (16, 49):
                    chunks = [_feeds(min(b, slices - i), v.needs_clinical) for i in range(0, slices, b)]
                    exams[str(slices)] = round(_time(lambda: [run_bound(sess, c, ["probability", "gradcam"])
                                                              for c in chunks], max(3, reps // 4)), 5)
                out["runs"].append({"provider": provider, "precision": precision, "sha256": digest[:12], "batch": b,
                                    "batch_latency_s": round(latency, 5), "slices_per_s": round(b / latency, 1),
                                    "exam_latency_s": exams})
                print(f"{provider} {precision} batch {b}: {latency * 1000:.2f} ms/batch, {b / latency:.0f} slices/s, "
                      f"exam 16 {exams['16'] * 1000:.1f} ms, 49 {exams['49'] * 1000:.1f} ms", file=sys.stderr)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = ROOT / "models" / "ct_ap_resnet18" / "0.2.1"
    ap.add_argument("--model", default=str(default if default.is_dir() else default.with_name("0.2.0")))
    ap.add_argument("--variant", default="clinical")
    ap.add_argument("--batches", default="1,2,4,8,16,32")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("bench/gpu.py: onnxruntime is not installed; nothing to measure", file=sys.stderr)
        return 0
    result = bench(Path(args.model), args.variant, [int(b) for b in args.batches.split(",")], args.reps)
    if not result["runs"]:
        print("bench/gpu.py: no GPU execution provider (CUDA/TensorRT) in this onnxruntime "
              f"({', '.join(result['providers_available'])}): nothing to measure. Install onnxruntime-gpu on a "
              "machine with an NVIDIA GPU to run it.", file=sys.stderr)
        return 0
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
