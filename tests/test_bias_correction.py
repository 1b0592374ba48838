"""Empirical bias correction of int8 copies: on a small real convolution stack quantised by
ONNX Runtime, the corrected copy's per-channel mean outputs sit closer to fp32's than the
uncorrected copy's, layer by layer, and the correction changes biases only."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")


def _stack(rng) -> "onnx.ModelProto":
    """Three 3x3 convs with ReLU, 8 -> 16 -> 16 -> 16 channels, biases set off-centre so the
    uint8 ranges clip and round unevenly."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, prev, cin = [], [], "x", 8
    for i in range(3):
        w = (rng.standard_normal((16, cin, 3, 3)) * 0.3).astype(np.float32)
        b = (rng.standard_normal(16) * 0.5).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        prev, cin = f"r{i}", 16
    graph = helper.make_graph(nodes, "stack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8, 12, 12])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [None, 16, 12, 12])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_bias_correction_brings_int8_channel_means_to_fp32_and_touches_only_biases():
    from onnx import numpy_helper
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from mvi_node.infer.bias_correction import channel_means, correct_biases
    from mvi_node.infer.quantize import _Reader

    rng = np.random.default_rng(3)
    model = _stack(rng)
    feeds = [{"x": np.abs(rng.standard_normal((8, 8, 12, 12))).astype(np.float32)} for _ in range(3)]
    with tempfile.TemporaryDirectory() as tmp:
        ranges = Path(tmp) / "ranges.json"

        def quantise(m):
            src, dst = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
            onnx.save(m, str(src))
            with contextlib.redirect_stdout(sys.stderr):
                quantize_static(str(src), str(dst), _Reader(feeds) if not ranges.exists() else None,
                                quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                                calibration_cache_path=str(ranges))
            return onnx.load(str(dst))

        plain = quantise(model)
        corrected, shifts = correct_biases(model, quantise, feeds)
        fixed = quantise(corrected)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    ref = channel_means(model, convs, feeds)

    def error(q):
        nodes = [n for n in q.graph.node if n.op_type == "Conv"]
        got = channel_means(q, nodes, feeds)
        return {n: float(np.abs(got[n] - ref[n]).mean()) for n in ref}

    before, after = error(plain), error(fixed)
    assert set(shifts) == {"conv0", "conv1", "conv2"} and all(s > 0 for s in shifts.values())
    assert sum(after.values()) < 0.5 * sum(before.values()), (before, after)
    assert after["conv2"] < before["conv2"]
    old = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    new = {i.name: numpy_helper.to_array(i) for i in corrected.graph.initializer}
    assert all(np.array_equal(old[k], new[k]) for k in old if k.startswith("w"))  # weights untouched
    assert any(not np.array_equal(old[k], new[k]) for k in old if k.startswith("b"))
