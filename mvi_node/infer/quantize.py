"""Reduced-precision copies of a served graph: static int8 (QDQ) and fp16. Recipe-neutral.

- :class:`FeedRecorder`: a :class:`~mvi_node.infer.recipe.ModelRunner` that passes every
  run through and keeps the feeds, so calibration tensors are exactly what a recipe's
  serving path gives its graph (crops of synthetic exams, sliding-window tiles), for
  any recipe, without knowing its insides;
- :func:`quantize_int8`: ONNX Runtime's static quantisation (``quantize_static``), QDQ
  format, per-channel signed int8 weights, unsigned int8 activations (the u8 x s8 pair
  MLAS runs with AVX-512 VNNI / AMX on x86), ranges at a high percentile of the recorded feeds,
  the first convolution and the head after the last one in float, ``Conv -> Relu -> Conv``
  channels equalised first (:mod:`mvi_node.infer.equalisation`), and the convolutions' biases
  corrected for the copy's mean output error (:mod:`mvi_node.infer.bias_correction`);
- :func:`convert_fp16`: every float initialiser and op in fp16, the inputs and outputs
  kept float32 so the copy is a drop-in (``onnxruntime.transformers.float16``);
- :func:`seconds_per_run`: median latency of a graph on given feeds, CPU provider.

bf16 is not offered: ONNX ``Conv`` takes bfloat16 only from opset 22 and ONNX Runtime's
CPU provider has no bfloat16 kernels for Conv, Relu, Add or MatMul (checked with 1.32),
so a bf16 graph of these models would not load here. Needs the ``onnx`` package (the
``train`` extra); serving does not.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

#: activation ranges at this percentile of |x| on the calibration inputs
PERCENTILE = 99.99
#: how the int8 copies are made, for the manifest
INT8_METHOD = ("onnxruntime.quantization.quantize_static, QDQ, per-channel symmetric int8 weights (QInt8), "
               f"asymmetric uint8 activations (QUInt8), percentile calibration ({PERCENTILE}), float after the last conv")


def int8_method(done: Mapping[str, Any]) -> str:
    """INT8_METHOD plus what :func:`quantize_int8` reported doing (float nodes, bias correction)."""
    text = INT8_METHOD
    if done.get("float_nodes"):
        text += "; also float: " + ", ".join(done["float_nodes"])
    if done.get("input_scaling_folded"):
        text += "; the input's constant scaling folded into its quantisation"
    if done.get("equalised"):
        eq = done["equalised"]
        text += (f"; activation equalisation (alpha {eq['alpha']}) of {eq['pairs']} Conv-Relu-Conv pairs "
                 "on the calibration inputs (the same float outputs)")
    if done.get("weights_offset"):
        text += (f"; {len(done['weights_offset'])} convolutions' weights at zero point -1 (the same values; "
                 "ONNX Runtime's general u8s8 GEMM in place of its symmetric-weight kernels)")
    if done.get("bias_correction"):
        text += (f"; empirical bias correction conv by conv on {done.get('bias_correction_samples')} calibration "
                 f"inputs (mean |shift| {done.get('bias_shift_mean')})")
    return text
FP16_METHOD = "onnxruntime.transformers.float16.convert_float_to_float16, float32 inputs and outputs kept"


class FeedRecorder:
    """A ModelRunner over another that keeps up to ``limit`` samples (first-axis rows of
    the batched feeds) per variant: calibration data from the serving path itself."""

    def __init__(self, runner: Any, limit: int = 256) -> None:
        self.runner, self.limit = runner, limit
        self.feeds: dict[str, list[dict[str, np.ndarray]]] = {}
        self.samples: dict[str, int] = {}

    @property
    def variants(self):
        return self.runner.variants

    def threshold(self, variant: str) -> float:
        return self.runner.threshold(variant)

    def arrays(self, variant: str):
        return self.runner.arrays(variant)

    def calibrate(self, variant: str, p: float) -> float:
        return self.runner.calibrate(variant, p)

    def run(self, variant: str, feeds: Mapping[str, np.ndarray], outputs: Sequence[str],
            batched: Sequence[str] = ()) -> list[np.ndarray]:
        room = self.limit - self.samples.get(variant, 0)
        if room > 0:
            first = next(iter(feeds.values()))
            n = len(first) if batched else 1
            take = min(n, room)
            kept = {k: np.array(v[:take] if batched and k in batched else v, np.float32) for k, v in feeds.items()}
            self.feeds.setdefault(variant, []).append(kept)
            self.samples[variant] = self.samples.get(variant, 0) + take
        return self.runner.run(variant, feeds, outputs, batched)


def batches(feeds: Iterable[Mapping[str, np.ndarray]], size: int) -> list[dict[str, np.ndarray]]:
    """Recorded feeds regrouped into batches of exactly ``size`` samples along the first
    axis (samples of one shape together; a remainder smaller than ``size`` is dropped
    unless it is all there is): ONNX Runtime's histogram calibrators need equal batches."""
    groups: dict[tuple, list[Mapping[str, np.ndarray]]] = {}
    for f in feeds:
        groups.setdefault(tuple((k, v.shape[1:]) for k, v in f.items()), []).append(f)
    out: list[dict[str, np.ndarray]] = []
    for group in groups.values():
        whole = {k: np.concatenate([f[k] for f in group]) for k in group[0]}
        n = len(next(iter(whole.values())))
        stops = list(range(0, n - size + 1, size)) or [0]
        out += [{k: v[i:i + size] for k, v in whole.items()} for i in stops]
    return out


class _Reader:
    """``onnxruntime.quantization.CalibrationDataReader`` over recorded feed batches."""

    def __init__(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def head_nodes(graph: Any, compute: Sequence[str] = ("Conv", "ConvTranspose", "MatMul")) -> list[str]:
    """Names of the nodes after the last heavy op: nothing of ``compute`` runs downstream.

    That head (the last residual add, pooling, the classifier, the in-graph Grad-CAM,
    a softmax) costs little and is where a few channels' ranges decide the outputs: a
    Grad-CAM map is a signed sum of 512 feature maps, whose uint8 rounding errors do not
    cancel. It stays float; the convolutions before it run in int8."""
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    feeds_compute: dict[str, bool] = {}

    def reaches(node: Any) -> bool:
        if node.name in feeds_compute:
            return feeds_compute[node.name]
        feeds_compute[node.name] = False  # cycles cannot happen in ONNX; this guards revisits
        found = any(c.op_type in compute or reaches(c) for o in node.output for c in consumers.get(o, []))
        feeds_compute[node.name] = found
        return found

    return [n.name for n in graph.node if n.op_type not in compute and not reaches(n)]


def first_conv(graph: Any) -> list[str]:
    """The first convolution: it reads the image (3 channels, a 7 x 7 kernel here). Kept float
    by default: on an AVX-512 VNNI CPU without AMX its int8 kernel measured slower than fp32 on
    ct_ap_resnet18; on an AMX CPU it is 3x faster (10 vs 33 ms for 16 slices), so
    ``--no-float-first`` pays there (bench/RESULTS.md, 2026-12-04). A grey image of 0..255
    loses nothing to 8-bit input steps only when the range maps grey levels onto them."""
    return [n.name for n in graph.node if n.op_type == "Conv"][:1]


def quantize_int8(src: Path | str, dst: Path | str, feeds: Sequence[Mapping[str, np.ndarray]],
                  exclude_ops: Sequence[str] = (), float_head: bool = True, float_nodes: Sequence[str] = (),
                  float_first: bool = True, bias_correction: bool = True,
                  correction_samples: int = 128, fold_input: bool = True,
                  offset_weights: bool | None = None, equalise: bool = True) -> dict[str, Any]:
    """Static int8 QDQ copy of ``src`` calibrated on ``feeds`` (dicts input name -> array);
    returns what was done, for the manifest (``float_nodes``, ``bias_correction``).

    The graph is first pre-processed (``quant_pre_process``: shape inference and the
    fusions quantisation needs); ``exclude_ops`` keeps ops of those types in float,
    ``float_head`` the nodes after the last convolution (:func:`head_nodes`), ``float_first``
    the first convolution (:func:`first_conv`) and ``float_nodes`` any others by name. With
    ``bias_correction`` the convolutions' biases absorb the int8 copy's mean output error,
    measured on the first ``correction_samples`` calibration inputs
    (:mod:`mvi_node.infer.bias_correction`); the activation ranges are calibrated once, on
    the fp32 graph, and reused. With ``fold_input`` (and the first convolution in int8) a
    constant scaling of the input is folded into its quantisation (:func:`fold_input_scaling`).
    With ``offset_weights`` the convolutions' weights move to zero point -1
    (:func:`offset_weight_zero_points`; same outputs, ONNX Runtime's AMX-capable GEMM path);
    None: where this CPU has AMX int8 (:func:`cpu_has_amx`), since only there was it measured.
    With ``equalise`` every ``Conv -> Relu -> Conv`` pair is first rescaled channel by channel
    on the calibration inputs (:mod:`mvi_node.infer.equalisation`; the same float outputs,
    activation ranges closer together for the per-tensor uint8 step)."""
    import inspect

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not feeds:
        raise ValueError("no calibration data: the cohort gave the graph no inputs")
    dst = Path(dst)
    # older onnxruntime cannot reuse calibrated ranges; recalibrating once per layer would take hours
    bias_correction = bias_correction and "calibration_cache_path" in inspect.signature(quantize_static).parameters
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))
        equalised: dict[str, float] = {}
        if equalise:
            from mvi_node.infer.equalisation import ALPHA, equalise_activations

            equalised = equalise_activations(model, feeds)
            if equalised:
                onnx.save(model, str(pre))
        graph = model.graph
        kept = [n.name for n in graph.node if n.op_type in set(exclude_ops)] + list(float_nodes)
        if float_first:
            kept += first_conv(graph)
        kept = list(dict.fromkeys(kept))
        nodes = kept + (head_nodes(graph) if float_head else [])
        ranges = Path(tmp) / "ranges.json"
        cache = {"calibration_cache_path": str(ranges)} if bias_correction else {}

        def static(model_path: Path, out: Path, reader: Any) -> None:
            # the calibrators print their progress: to stderr, stdout is the command's JSON
            with contextlib.redirect_stdout(sys.stderr):
                quantize_static(str(model_path), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                calibrate_method=CalibrationMethod.Percentile, nodes_to_exclude=nodes,
                                # ranges at a percentile of |x|: a few outliers no longer widen the uint8
                                # step of a whole tensor (ct_ap_resnet18 image-only, 80 validation exams:
                                # Grad-CAM r 0.933 at 99.99, 0.929 at 99.999; MinMax 0.89 on 24 exams)
                                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                                               "CalibPercentile": PERCENTILE}, **cache)

        static(pre, dst, _Reader(list(feeds)))
        done: dict[str, Any] = {"float_nodes": kept, "bias_correction": bias_correction}
        if equalised:
            done["equalised"] = {"alpha": ALPHA, "pairs": len(equalised),
                                 "spread_max": max(equalised.values())}
        if bias_correction:
            from mvi_node.infer.bias_correction import correct_biases

            n, sample = 0, []
            for f in feeds:  # the first correction_samples inputs, in the calibration batches
                if n >= correction_samples:
                    break
                sample.append(f)
                n += len(next(iter(f.values())))
            work = Path(tmp) / "work.onnx"

            def quantise(model: Any) -> Any:
                onnx.save(model, str(work))
                static(work, Path(tmp) / "work.int8.onnx", None)
                return onnx.load(str(Path(tmp) / "work.int8.onnx"))

            corrected, shifts = correct_biases(onnx.load(str(pre)), quantise, sample)
            onnx.save(corrected, str(work))
            static(work, dst, None)
            done["bias_shift_mean"] = round(float(np.mean(list(shifts.values()))) if shifts else 0.0, 5)
            done["bias_correction_samples"] = n
    if offset_weights is None:
        offset_weights = cpu_has_amx()
    if (fold_input and not float_first) or offset_weights:
        model = onnx.load(str(dst))
        if fold_input and not float_first and fold_input_scaling(model):
            done["input_scaling_folded"] = True
        if offset_weights:
            done["weights_offset"] = offset_weight_zero_points(model)
        onnx.save(model, str(dst))
    return done


def fold_input_scaling(model: Any) -> bool:
    """In an int8 graph whose input is scaled by constants before its first quantisation
    (``Sub(x, mean)``, ``Div(., std)``, then ``QuantizeLinear``: seed 000's "grey/255 ->
    roughly zero-mean"), quantise the raw input instead, with the scaling folded into the
    quantisation's scale and zero point. Two element-wise passes over the whole input
    batch go (about 4 % of ct_ap_resnet18's int8 run on 2 cores); the integers the first
    convolution reads are the same up to rounding ties, because the scale is nudged (by
    under 0.5 / zero point, 0.4 % here) so that ``mean / (scale * std)`` is a whole number.
    Returns whether it folded (False: no such chain, scalars not constant, or the folded
    zero point would leave uint8)."""
    from onnx import numpy_helper

    graph = model.graph
    init = {i.name: i for i in graph.initializer}
    users: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)

    def only_user(tensor: str, op: str) -> Any:
        u = users.get(tensor, [])
        return u[0] if len(u) == 1 and u[0].op_type == op else None

    def scalar(name: str) -> float | None:
        if name not in init:
            return None
        v = numpy_helper.to_array(init[name])
        return float(v) if v.size == 1 else None

    for x in graph.input:
        sub = only_user(x.name, "Sub")
        div = sub is not None and sub.input[0] == x.name and only_user(sub.output[0], "Div")
        q = div and div.input[0] == sub.output[0] and only_user(div.output[0], "QuantizeLinear")
        if not q or len(q.input) < 3:
            continue
        mean, std, scale = scalar(sub.input[1]), scalar(div.input[1]), scalar(q.input[1])
        zero = scalar(q.input[2])
        dqs = users.get(q.output[0], [])
        if None in (mean, std, scale, zero) or std == 0 or not dqs or any(
                d.op_type != "DequantizeLinear" or d.input[1] != q.input[1] for d in dqs):
            continue
        k = round(mean / (scale * std))
        if k == 0 or not 0 <= int(zero) - k <= 255:
            continue
        nudged = np.float32(mean / (k * std))
        dtype = numpy_helper.to_array(init[q.input[2]]).dtype
        init[q.input[1]].CopyFrom(numpy_helper.from_array(np.array(nudged, np.float32), q.input[1]))  # the DQs' too
        raw_scale, raw_zero = q.input[1] + "_raw_input", q.input[2] + "_raw_input"
        graph.initializer.extend([numpy_helper.from_array(np.array(nudged * np.float32(std), np.float32), raw_scale),
                                  numpy_helper.from_array(np.array(int(zero) - k, dtype), raw_zero)])
        q.input[0], q.input[1], q.input[2] = x.name, raw_scale, raw_zero
        graph.node.remove(sub), graph.node.remove(div)
        return True
    return False


def cpu_has_amx() -> bool:
    """Whether this CPU advertises AMX int8 tiles (``amx_int8`` in /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return any(line.startswith("flags") and " amx_int8" in line for line in f)
    except OSError:
        return False


def offset_weight_zero_points(model: Any, skip: Sequence[str] = (), pointwise: bool = False) -> list[str]:
    """Move the int8 weights of the convolutions from zero point 0 to -1 (each weight one
    lower), so that ONNX Runtime's CPU QLinearConv runs them on its general u8s8 GEMM
    (im2col, then MLAS's QGEMM, which uses AMX where the CPU has it) instead of its
    symmetric-weight kernels (AVX-512 VNNI only). The dequantised weights are the same
    numbers, so are the outputs: ``(q - 1) - (-1) = q``, and a symmetric int8 weight is
    never -128. Measured on the AMX CPU (bench/RESULTS.md): ct_ap_resnet18's 3 x 3
    convolutions 1.1-2.3x faster, its 7 x 7 first one the same, its 1 x 1 ones up to 1.7x
    slower; liver_tumor_seg's 3D convolutions 1.24x slower. So only 2D convolutions move,
    1 x 1 ones only with ``pointwise``, and none whose name contains one of ``skip``.
    Returns the names of the convolutions changed."""
    from onnx import numpy_helper

    graph = model.graph
    init = {i.name: i for i in graph.initializer}
    users: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    changed = []
    for dq in graph.node:
        if dq.op_type != "DequantizeLinear" or len(dq.input) < 3 or dq.input[0] not in init or dq.input[2] not in init:
            continue
        convs = [u for u in users.get(dq.output[0], []) if u.op_type == "Conv" and u.input[1] == dq.output[0]]
        if len(convs) != len(users.get(dq.output[0], [])) or not convs or any(s in convs[0].name for s in skip):
            continue
        w = numpy_helper.to_array(init[dq.input[0]])
        zero = numpy_helper.to_array(init[dq.input[2]])
        if w.dtype != np.int8 or zero.dtype != np.int8 or zero.any() or (w.size and int(w.min()) < -127):
            continue
        if w.ndim != 4 or (not pointwise and w.shape[2:] == (1, 1)):
            continue
        init[dq.input[0]].CopyFrom(numpy_helper.from_array((w.astype(np.int16) - 1).astype(np.int8), dq.input[0]))
        init[dq.input[2]].CopyFrom(numpy_helper.from_array(np.full_like(zero, -1), dq.input[2]))
        changed.append(convs[0].name)
    return changed


def convert_fp16(src: Path | str, dst: Path | str) -> Path:
    """fp16 copy of ``src`` with float32 inputs and outputs (a drop-in for the fp32 graph)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
    return Path(dst)


def session(path: Path | str, threads: int = 0, config: Mapping[str, str] | None = None):
    """A CPU session on ``path`` (``config``: session config entries)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    for k, v in (config or {}).items():
        opts.add_session_config_entry(k, v)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def interleaved_seconds(paths: Sequence[Path | str], feed: Mapping[str, np.ndarray], reps: int = 5,
                        rounds: int = 3) -> list[float]:
    """Median seconds per run of each graph, the graphs timed in turn ``rounds`` times, so a
    burst of load on a shared machine hits all of them rather than one."""
    got: list[list[float]] = [[] for _ in paths]
    for _ in range(rounds):
        for i, path in enumerate(paths):
            got[i].append(seconds_per_run(path, feed, reps))
    return [statistics.median(g) for g in got]


def seconds_per_run(path: Path | str, feed: Mapping[str, np.ndarray], reps: int = 5, threads: int = 0) -> float:
    """Median wall seconds of one run of ``path`` on ``feed`` (after one warm-up)."""
    sess = session(path, threads)
    sess.run(None, dict(feed))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        sess.run(None, dict(feed))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def op_counts(path: Path | str) -> dict[str, int]:
    """Node count per op type (what quantisation changed)."""
    import onnx

    counts: dict[str, int] = {}
    for n in onnx.load(str(path)).graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return dict(sorted(counts.items()))


def describe_versions() -> dict[str, Any]:
    import onnx
    import onnxruntime as ort

    return {"onnxruntime": ort.__version__, "onnx": onnx.__version__}
