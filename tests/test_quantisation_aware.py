"""Quantisation-aware fine-tuning (issue 17): the torch simulation matches ONNX Runtime's
int8 arithmetic, the served graph rebuilds exactly, and the trainer fine-tunes from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from mvi_node.recipes.fake_quant import observe, prepare, strip

SERVED = Path(__file__).resolve().parents[1] / "models" / "ct_ap_resnet18" / "0.2.0"


class _Feed:
    def __init__(self, batches):
        self.batches = iter(batches)

    def get_next(self):
        return next(self.batches, None)


def test_the_simulation_predicts_what_onnx_runtime_int8_computes(tmp_path):
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 4, 3, padding=1)).eval()
    x = torch.rand(8, 4, 24, 24)
    fp32 = tmp_path / "fp32.onnx"
    torch.onnx.export(net, (x,), str(fp32), input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
    int8 = tmp_path / "int8.onnx"
    quantize_static(str(fp32), str(int8), _Feed([{"x": x.numpy()}]), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax)
    y_int8 = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        y_fp32 = net(x).numpy()
        names = prepare(net, outputs=["4"])  # ORT rounds the graph's output too (it ends in a conv)
        assert names == ["0", "2", "4"]
        with observe(net):  # the ranges of the one calibration batch on float, as MinMax saw them
            net(x)
        y_sim = net.eval()(x).numpy()
    # ORT's calibration ranges differ from the simulation's in the 4th digit, so the two land on
    # slightly different grids and do not round alike element by element; what training needs
    # is rounding noise of the same size, and the weight rounding, which is shared, makes the
    # two deviations from float correlate
    e_int8, e_sim = (y_int8 - y_fp32).ravel(), (y_sim - y_fp32).ravel()
    assert np.abs(e_int8).mean() > 1e-3 * np.abs(y_fp32).mean()  # int8 really differs from float
    assert 0.8 < np.abs(e_sim).mean() / np.abs(e_int8).mean() < 1.25
    assert np.corrcoef(e_int8, e_sim)[0, 1] > 0.3
    # the straight-through estimator: gradients reach the float weights
    net.train()
    net(x).sum().backward()
    assert net[0].parametrizations.weight.original.grad.abs().sum() > 0
    strip(net)
    assert not any("fq" in k or "parametrizations" in k for k in net.state_dict())
    with torch.no_grad():
        np.testing.assert_allclose(net.eval()(x).numpy(), y_fp32, atol=1e-6)


def test_the_served_graph_rebuilds_to_the_same_outputs():
    from mvi_node.recipes.ct_ap_resnet18.network import export_module
    from mvi_node.recipes.ct_ap_resnet18.qat import from_onnx

    rng = np.random.default_rng(3)
    for file in ("model.onnx", "model_image_only.onnx"):
        net = from_onnx(SERVED / file)
        sess = ort.InferenceSession(str(SERVED / file), providers=["CPUExecutionProvider"])
        x = rng.random((3, 3, 256, 256), np.float32)
        feed = {"image": x}
        if net.clinical:
            feed["clinical"] = rng.random((3, 9), np.float32)
        prob, cam = sess.run(None, feed)
        with torch.no_grad():
            tp, tc = export_module(net).eval()(*[torch.from_numpy(v) for v in feed.values()])
        np.testing.assert_allclose(tp.numpy(), prob, atol=1e-5)
        np.testing.assert_allclose(tc.numpy(), cam, atol=1e-3)


def test_a_graph_of_another_network_is_refused(tmp_path):
    from mvi_node.recipes.ct_ap_resnet18.qat import ServedGraphError, from_onnx

    other = tmp_path / "other.onnx"
    torch.onnx.export(nn.Conv2d(3, 4, 3).eval(), (torch.rand(1, 3, 8, 8),), str(other), input_names=["image"],
                      opset_version=17, dynamo=False)
    with pytest.raises(ServedGraphError, match="convolutions"):
        from_onnx(other)


def test_train_fine_tunes_quantisation_aware_from_a_served_model(tmp_path):
    from mvi_node.commands.main import main
    from mvi_node.infer import ModelRegistry
    from mvi_node.synth import generate_ct

    generate_ct(tmp_path / "data", 4, seed=5, matrix=128, hard_cases="none")
    out = tmp_path / "models" / "ct_ap_resnet18" / "9.9.7"
    rc = main(["train", "ct_ap_resnet18", "--cohort", str(tmp_path / "data"), "--out", str(out), "--seed", "1",
               "--epochs", "1", "--clinical-epochs", "1", "--max-steps", "1", "--version", "9.9.7",
               "--qat-from", str(SERVED), "--lr", "1e-4"])
    assert rc == 0
    model = ModelRegistry([tmp_path / "models"]).get("ct_ap_resnet18")
    assert model.raw["training"]["quantisation_aware_from"] == str(SERVED)
    assert set(model.variants) == {"clinical", "image_only"}
    # plain fp32 graphs, no rounding left in them, and the fine-tune started from the served weights:
    # one SGD step at lr 1e-4 moves the image-only probabilities only a little
    import onnx

    for file in ("model.onnx", "model_image_only.onnx"):
        ops = {n.op_type for n in onnx.load(str(out / file)).graph.node}
        assert not ops & {"QuantizeLinear", "DequantizeLinear", "FakeQuantize"}
    x = np.random.default_rng(1).random((4, 3, 256, 256), np.float32)
    before = ort.InferenceSession(str(SERVED / "model_image_only.onnx")).run(["probability"], {"image": x})[0]
    after = ort.InferenceSession(str(out / "model_image_only.onnx")).run(["probability"], {"image": x})[0]
    assert np.abs(before - after).max() < 0.05
