"""Activation equalisation before int8 (mvi_node.infer.equalisation): exact in float, and
the int8 copy of a network with unbalanced channels gets closer to fp32 with it."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from mvi_node.infer import quantize as q  # noqa: E402
from mvi_node.infer.equalisation import channel_ranges, equalise_activations, relu_pairs  # noqa: E402


class Branchy(nn.Module):
    """conv1 -> relu -> conv2 -> relu -> conv3, plus a second reader of conv3's relu (not
    rescalable: the extra reader would see the scaled channels)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1), \
            nn.Conv2d(16, 8, 3, padding=1)
        self.head, self.side = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 1)

    def forward(self, image):
        x = torch.relu(self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(image))))))
        return self.head(x) + self.side(x)


def _unbalanced(tmp_path):
    """A float network whose first activation's channels span 1x..40x (the second conv reads
    them back at 1/x, so the function is an ordinary one): what folded batch norms leave."""
    torch.manual_seed(0)
    net = Branchy().eval()
    gain = torch.logspace(0, np.log10(40.0), 16)
    with torch.no_grad():
        net.conv1.weight.mul_(gain[:, None, None, None])
        net.conv1.bias.mul_(gain)
        net.conv2.weight.div_(gain[None, :, None, None])
        net.conv1.bias[3] = -1e3  # a dead channel: never positive
    x = np.random.default_rng(0).random((8, 3, 24, 24), dtype=np.float32)
    src = tmp_path / "fp32.onnx"
    torch.onnx.export(net, (torch.from_numpy(x),), str(src), input_names=["image"], output_names=["y"],
                      opset_version=17, dynamo=False)
    return src, x


def _run(path, x):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]


def test_equalisation_keeps_the_float_outputs_and_narrows_the_channel_spread(tmp_path):
    src, x = _unbalanced(tmp_path)
    model = onnx.load(str(src))
    pairs = relu_pairs(model.graph)
    # conv1->relu->conv2 and conv2->relu->conv3; conv3's relu has two readers: left alone
    assert [(a.name, b.name) for a, _r, b in pairs] == [("/conv1/Conv", "/conv2/Conv"), ("/conv2/Conv", "/conv3/Conv")]
    first = pairs[0][1].output[0]
    before = channel_ranges(model, [first], [{"image": x}])[first]
    live = before > 0
    assert not live[3] and live.sum() == 15
    spread = equalise_activations(model, [{"image": x}])
    onnx.checker.check_model(model)
    after = channel_ranges(model, [first], [{"image": x}])[first]
    assert np.all(np.isfinite(after)) and after[3] == 0.0  # the dead channel kept scale 1, no division by 0
    assert spread[first] == pytest.approx(after[live].max() / np.median(after[live]), rel=1e-3)
    assert spread[first] < 0.25 * (before[live].max() / np.median(before[live]))
    onnx.save(model, str(tmp_path / "eq.onnx"))
    y0, y1 = _run(src, x), _run(tmp_path / "eq.onnx", x)
    np.testing.assert_allclose(y1, y0, rtol=1e-4, atol=1e-4 * float(np.abs(y0).max()))


def test_the_int8_copy_of_an_unbalanced_network_is_closer_to_fp32_with_equalisation(tmp_path):
    src, x = _unbalanced(tmp_path)
    y = _run(src, x)
    errors = {}
    for equalise in (False, True):
        dst = tmp_path / f"int8-{equalise}.onnx"
        done = q.quantize_int8(src, dst, [{"image": x}], float_first=False, bias_correction=False,
                               offset_weights=False, equalise=equalise)
        errors[equalise] = float(np.abs(_run(dst, x) - y).mean())
        assert ("equalised" in done) == equalise
        assert ("activation equalisation" in q.int8_method(done)) == equalise
    assert done["equalised"]["pairs"] == 2
    assert errors[True] < 0.6 * errors[False], errors


def test_alpha_outside_zero_to_one_is_refused(tmp_path):
    src, x = _unbalanced(tmp_path)
    with pytest.raises(ValueError, match="alpha"):
        equalise_activations(onnx.load(str(src)), [{"image": x}], alpha=1.5)
