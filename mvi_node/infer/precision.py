"""Which execution provider and which numeric precision a variant's graph is served in.

Providers: the configured order (default TensorRT, CUDA, CPU) filtered by what the
installed onnxruntime offers; CPU is always the last resort. A GPU provider gets its
tensors through IO binding (:func:`run_bound`), so inputs are copied to the device once
per call and outputs are allocated there, not bounced through host buffers per node.

Precision: a variant ships its fp32 graph and may list reduced-precision copies
(``[variants.X.precisions.int8]``, written by ``mvi-node quantize``), each with the
accuracy check that was run against fp32. ``auto`` serves the fastest copy whose check
passed on the provider in use; a site may pin one (``[inference] precision``). A copy
that was not shipped or whose check failed is never served: fp32 is, and the reason is
logged. What ran is in every result's model identity (precision and its sha256).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

AUTO = "auto"
CHOICES = (AUTO, "fp32", "int8", "fp16", "bf16")
DEFAULT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
#: a CPU copy must have measured at least this much faster than fp32 to be served: timings
#: on a shared machine scatter by +-20 %, and a copy no faster only adds its error
MIN_SPEEDUP = 1.2

#: reduced precisions each provider runs fast, best first. CUDA's EP runs QDQ int8 graphs
#: as fp32 kernels between Quantize/Dequantize nodes (slower than fp32), so it gets
#: fp16/bf16 only. TensorRT builds int8 engines only from symmetric signed-int8 Q/DQ
#: (explicit quantization); the int8 copies made here are for the CPU (asymmetric uint8
#: activations, MLAS's u8 x s8 VNNI kernels), so TensorRT gets fp16/bf16 too.
FAST_ON: dict[str, tuple[str, ...]] = {
    "TensorrtExecutionProvider": ("fp16", "bf16"),
    "CUDAExecutionProvider": ("fp16", "bf16"),
    "CPUExecutionProvider": ("int8", "fp16", "bf16"),
}


def pick_providers(preferred: Sequence[str] = DEFAULT_PROVIDERS,
                   available: Sequence[str] | None = None) -> list[str]:
    """``preferred`` filtered by what this onnxruntime build offers; CPU always last resort."""
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    have = set(available)
    chosen = [p for p in preferred if p in have]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def device_of(providers: Sequence[str]) -> str:
    """"cuda" when the first provider is a GPU one, else "cpu" (ORT's OrtValue device names)."""
    return "cuda" if providers and providers[0] in GPU_PROVIDERS else "cpu"


def provider_options(providers: Sequence[str], precision: str, cache_dir: str | None = None) -> list[dict[str, Any]]:
    """Per-provider options: TensorRT builds fp16 engines for an fp16 graph (cached when
    ``cache_dir``); a Q/DQ graph needs no precision flag (explicit quantization)."""
    out: list[dict[str, Any]] = []
    for p in providers:
        if p == "TensorrtExecutionProvider":
            # option values as ONNX Runtime parses them ("1"/"0"), not Python's "True"
            opts: dict[str, Any] = {"trt_fp16_enable": "1" if precision in ("fp16", "bf16") else "0"}
            if cache_dir:
                opts.update(trt_engine_cache_enable="1", trt_engine_cache_path=cache_dir)
            out.append(opts)
        else:
            out.append({})
    return out


def choose_precision(variant: Any, wanted: str = AUTO, provider: str = "CPUExecutionProvider") -> tuple[str, str]:
    """(precision to serve, why) for a :class:`~mvi_node.infer.manifest.Variant`.

    ``auto``: among the copies whose accuracy check passed and that ``provider`` runs
    fast, on CPU the one the check measured fastest (one measured less than
    :data:`MIN_SPEEDUP` times faster than fp32 is skipped), on a GPU the first of
    :data:`FAST_ON`; none: fp32. A pinned precision is served only when its copy is
    shipped and passed; else fp32, and ``why`` says so.
    """
    if wanted not in CHOICES:
        raise ValueError(f"precision must be one of {list(CHOICES)}, not {wanted!r}")
    shipped: Mapping[str, Any] = getattr(variant, "precisions", {}) or {}
    if wanted == "fp32":
        return "fp32", "pinned fp32"
    if wanted != AUTO:
        p = shipped.get(wanted)
        if p is None:
            return "fp32", f"{wanted} pinned but the model ships no {wanted} graph: fp32"
        if not p.passed:
            return "fp32", f"{wanted} pinned but its accuracy check failed: fp32"
        return wanted, f"pinned {wanted} (accuracy check passed)"
    fast = FAST_ON.get(provider, ())
    ok = [n for n in fast if n in shipped and shipped[n].passed]
    if provider == "CPUExecutionProvider":
        speed = {n: float(shipped[n].check.get("speedup_vs_fp32", 0.0) or 0.0) for n in ok}
        ok = sorted((n for n in ok if speed[n] >= MIN_SPEEDUP), key=lambda n: -speed[n])
    if ok:
        return ok[0], f"auto: {ok[0]} is the fastest precision whose accuracy check passed"
    failed = [n for n, p in shipped.items() if not p.passed]
    why = "auto: no reduced-precision graph shipped" if not shipped else (
        f"auto: no reduced-precision graph passed its check and runs faster on {provider}"
        + (f" (failed: {', '.join(sorted(failed))})" if failed else ""))
    return "fp32", why + ": fp32"


def run_bound(sess: Any, feeds: Mapping[str, np.ndarray], outputs: Sequence[str], device: str = "cuda",
              device_id: int = 0) -> list[np.ndarray]:
    """One run through IO binding: inputs copied to ``device`` once, outputs allocated
    there and copied back once at the end (what a GPU provider wants)."""
    import onnxruntime as ort

    binding = sess.io_binding()
    for name, value in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), device,
                                                                           device_id))
    for name in outputs:
        binding.bind_output(name, device, device_id)
    sess.run_with_iobinding(binding)
    return list(binding.copy_outputs_to_cpu())
