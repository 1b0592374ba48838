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


def test_percentile_ranges_are_where_the_quantiser_puts_them_and_stay_while_training(tmp_path):
    """The distillation trains against the grid of the int8 copy: ranges from the same
    percentile as ``mvi-node quantize`` (ONNX Runtime, non-symmetric), frozen afterwards."""
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from mvi_node.recipes.fake_quant import ActivationFakeQuant, percentile_ranges

    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)).eval()
    # a heavy tail: a few outliers that a min-max range would follow and a percentile cuts off
    x = torch.randn(16, 3, 32, 32)
    x[0, 0, 0, :4] = 40.0
    fp32 = tmp_path / "fp32.onnx"
    torch.onnx.export(net, (x,), str(fp32), input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
    int8 = tmp_path / "int8.onnx"
    quantize_static(str(fp32), str(int8), _Feed([{"x": x.numpy()}]), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=CalibrationMethod.Percentile, extra_options={"CalibPercentile": 99.9})
    graph = onnx.load(str(int8)).graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    q_input = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    ort_scale, ort_zero = float(init[q_input.input[1]]), int(init[q_input.input[2]])

    prepare(net)
    with percentile_ranges(net, 99.9):
        net(x)
    first = net[0].input_fq
    assert isinstance(first, ActivationFakeQuant) and first.frozen
    scale = (float(first.hi) - float(first.lo)) / 255
    assert float(first.hi) < 10.0  # the outliers (40) were cut off, as the quantiser cuts them
    assert abs(scale - ort_scale) / ort_scale < 0.05
    assert abs(round(-float(first.lo) / scale) - ort_zero) <= 2
    lo, hi = float(first.lo), float(first.hi)
    net.train()
    net(x * 3.0)  # a training batch of another range leaves the frozen range alone
    assert (float(first.lo), float(first.hi)) == (lo, hi)


def test_distillation_loss_is_zero_for_the_teacher_and_stays_finite_on_empty_maps():
    from mvi_node.recipes.ct_ap_resnet18.distill import loss, outputs
    from mvi_node.recipes.ct_ap_resnet18.qat import from_onnx

    torch.manual_seed(2)
    teacher = from_onnx(SERVED / "model_image_only.onnx")
    x = torch.rand(4, 3, 256, 256)
    with torch.no_grad():
        target = outputs(teacher, x, None)
    total, parts = loss(target, target)
    # the teacher scores 0 on every term but the empty-map margin (its own empty maps' largest
    # pixel may sit just under 0, inside the margin); float32 r of a map with itself: 1 +- 3e-5
    assert all(v == pytest.approx(0.0, abs=1e-4) for k, v in parts.items() if k != "cam_empty"), parts
    assert parts["cam_empty"] >= 0
    # a student off the teacher: every term positive, and the gradient bounded although one
    # map is nearly empty (1e-7 after the ReLU) in both, where Pearson r's gradient is ~1 / spread
    feats, d, cam, pre = (t.clone() for t in target)
    cam[0] = 1e-7 * torch.rand_like(cam[0])
    student = [t.clone().requires_grad_(True) for t in (feats, d, cam, pre)]
    noise = torch.rand_like(cam) * cam.flatten(1).amax(1)[:, None, None] * 0.05
    off = (student[0] * 1.1, student[1] + 0.3, student[2] + noise, student[3] * 0.9)
    total, parts = loss(off, (feats, d, cam, pre))
    assert all(v > 0 for k, v in parts.items() if k != "cam_empty"), parts
    total.backward()
    assert all(torch.isfinite(s.grad).all() and s.grad.abs().max() < 1e3 for s in student)


def test_train_distils_an_int8_student_from_the_served_model(tmp_path):
    from mvi_node.commands.main import main
    from mvi_node.infer import ModelRegistry
    from mvi_node.synth import generate_ct

    generate_ct(tmp_path / "data", 4, seed=5, matrix=128, hard_cases="none")
    out = tmp_path / "models" / "ct_ap_resnet18" / "9.9.6"
    rc = main(["train", "ct_ap_resnet18", "--cohort", str(tmp_path / "data"), "--out", str(out), "--seed", "1",
               "--epochs", "1", "--clinical-epochs", "1", "--max-steps", "1", "--version", "9.9.6",
               "--qat-from", str(SERVED), "--distill", "--int8-first-conv", "--lr", "1e-5"])
    assert rc == 0
    model = ModelRegistry([tmp_path / "models"]).get("ct_ap_resnet18")
    training = model.raw["training"]
    assert "distilled from the served graph" in training["quantisation_aware"]
    assert "first convolution" not in training["quantisation_aware"]  # simulated in int8 too
    assert "no weight decay" in training["optimizer"]
    history = __import__("json").loads(model.raw["variants"]["image_only"]["metrics"]["history"])
    assert {"logit", "probability", "cam", "cam_pre_relu", "cam_empty", "val_gradcam_r_mean"} <= set(history[0])
    x = np.random.default_rng(1).random((4, 3, 256, 256), np.float32)
    before = ort.InferenceSession(str(SERVED / "model_image_only.onnx")).run(["probability"], {"image": x})[0]
    after = ort.InferenceSession(str(out / "model_image_only.onnx")).run(["probability"], {"image": x})[0]
    assert np.abs(before - after).max() < 0.05


def test_an_empty_teacher_map_pulls_the_students_largest_pixel_below_zero():
    from mvi_node.recipes.ct_ap_resnet18.distill import loss

    n = 2
    feats, d = torch.zeros(n, 4, 8, 8), torch.zeros(n)
    cam = torch.zeros(n, 256, 256)
    teacher_pre = -torch.rand(n, 8, 8) - 0.5  # slice 0 and 1 empty: nothing above 0
    teacher_pre[1, 3, 3] = 2.0  # slice 1 is not
    cam[1, 90:110, 90:110] = 1.0
    student_pre = teacher_pre.clone()
    student_pre[0, 4, 4] = 0.3  # one pixel above 0 in the empty slice: a spot once stretched
    student_pre.requires_grad_(True)
    total, parts = loss((feats, d, cam, student_pre), (feats, d, cam, teacher_pre))
    assert parts["cam_empty"] > 0
    total.backward()
    assert student_pre.grad[0, 4, 4] > 0  # SGD lowers it
    assert student_pre.grad[1].abs().sum() == 0 or student_pre.grad[1, 3, 3] == 0  # slice 1 not pushed down


def test_float_arithmetic_runs_the_prepared_network_unrounded_and_restores_the_rounding():
    from mvi_node.recipes.fake_quant import float_arithmetic

    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        y_fp32 = net(x)
    prepare(net, outputs=["2"])
    with observe(net):
        net(x)
    net.eval()
    with torch.no_grad():
        y_int8 = net(x)
        with float_arithmetic(net):
            y_float = net(x)
        y_again = net(x)
    assert (y_int8 - y_fp32).abs().max() > 1e-4  # the simulation rounds
    torch.testing.assert_close(y_float, y_fp32, atol=1e-6, rtol=0)  # inside: plain float, same weights
    torch.testing.assert_close(y_again, y_int8, atol=0, rtol=0)  # the rounding is back on leaving
    with float_arithmetic(net):  # gradients reach the float weights inside too
        net(x).sum().backward()
    assert net[0].parametrizations.weight.original.grad.abs().sum() > 0


def test_a_self_consistent_distillation_reports_its_int8_against_its_own_fp32(tmp_path):
    from mvi_node.commands.main import main
    from mvi_node.infer import ModelRegistry
    from mvi_node.synth import generate_ct

    generate_ct(tmp_path / "data", 4, seed=5, matrix=128, hard_cases="none")
    out = tmp_path / "models" / "ct_ap_resnet18" / "9.9.7"
    rc = main(["train", "ct_ap_resnet18", "--cohort", str(tmp_path / "data"), "--out", str(out), "--seed", "1",
               "--epochs", "1", "--clinical-epochs", "1", "--max-steps", "1", "--version", "9.9.7",
               "--qat-from", str(SERVED), "--distill", "--self-consistent", "2", "--lr", "1e-5"])
    assert rc == 0
    model = ModelRegistry([tmp_path / "models"]).get("ct_ap_resnet18")
    assert "self-consistent (weight 2)" in model.raw["training"]["quantisation_aware"]
    history = __import__("json").loads(model.raw["variants"]["image_only"]["metrics"]["history"])
    # the loss has both halves, and each epoch is judged as the quantiser's check will judge it
    # (int8 against the same weights' fp32), with the fp32's drift from the teacher beside it
    assert {"logit", "self_logit", "self_cam", "val_gradcam_r_mean", "val_drift_gradcam_r_mean"} <= set(history[0])
    assert history[0]["self_logit"] > 0  # int8 and fp32 of one network differ, and the term sees it
    assert history[0]["val_probability_delta_max"] > 0  # and so does the epoch's check (int8 vs own fp32)
    assert history[0]["val_drift_probability_delta_max"] < 0.05  # one tiny step: fp32 still the teacher
