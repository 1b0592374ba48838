"""Seed 000's network rebuilt from a served fp32 graph, for quantisation-aware fine-tuning.

The served ONNX graphs are the only weights the repository ships. torch's exporter folded
each batch norm into its convolution, so the rebuilt network has biased convolutions
and identity batch norms: exactly the arithmetic ``mvi-node quantize`` sees, which is
what the int8 simulation (:mod:`mvi_node.recipes.fake_quant`) must match. ONNX node names
carry the torch module path (``/layer1/layer1.0/conv1/Conv`` is
``backbone.layer1.0.conv1``), which is how weights find their module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from mvi_node.recipes.ct_ap_resnet18.network import MviResNet18
from mvi_node.recipes.fake_quant import prepare

#: kept float by ``mvi-node quantize`` (its default ``float first``: 3 input channels gain nothing in int8)
FLOAT_CONVS = ("backbone.conv1",)
#: the last block's output feeds Grad-CAM and the head in float ("float after the last conv")
LAST_CONV = "backbone.layer4.1.conv2"


class ServedGraphError(ValueError):
    """The graph is not a seed 000 ResNet the rebuild understands."""


def _module_path(node_name: str) -> str:
    # "/layer2/layer2.0/downsample/downsample.0/Conv" -> "backbone.layer2.0.downsample.0"
    parts = node_name.strip("/").split("/")[:-1]
    out = []
    for p in parts:
        out.extend(p.split(".")[-1:] if out and "." in p else [p])
    return "backbone." + ".".join(out)


def from_onnx(path: Path | str) -> MviResNet18:
    """The fp32 network of one served graph (``model.onnx`` or ``model_image_only.onnx``)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    init = {i.name: np.array(numpy_helper.to_array(i)) for i in graph.initializer}  # writable copies
    clinical = any(i.name == "clinical" for i in graph.input)
    net = MviResNet18(clinical=clinical)
    modules = dict(net.named_modules())
    convs = [n for n in graph.node if n.op_type == "Conv"]
    torch_convs = [k for k, m in modules.items() if isinstance(m, nn.Conv2d)]
    if len(convs) != len(torch_convs):
        raise ServedGraphError(f"{len(convs)} convolutions in the graph, the network has {len(torch_convs)}")
    for node in convs:
        name = _module_path(node.name)
        old = modules.get(name)
        if not isinstance(old, nn.Conv2d):
            raise ServedGraphError(f"graph node {node.name} has no convolution {name} in the network")
        w, b = init[node.input[1]], init[node.input[2]]
        if tuple(w.shape) != tuple(old.weight.shape):
            raise ServedGraphError(f"{name}: weight {w.shape} in the graph, {tuple(old.weight.shape)} in the network")
        new = nn.Conv2d(old.in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                        old.dilation, old.groups, bias=True)
        with torch.no_grad():
            new.weight.copy_(torch.from_numpy(w)), new.bias.copy_(torch.from_numpy(b))
        _replace(net, name, new)
    for name, m in list(net.named_modules()):
        if isinstance(m, nn.BatchNorm2d):
            _replace(net, name, nn.Identity())  # folded into the convolution before it
    with torch.no_grad():
        net.fc.weight.copy_(torch.from_numpy(init["net.fc.weight"])), net.fc.bias.copy_(torch.from_numpy(init["net.fc.bias"]))
        net.mean.copy_(torch.from_numpy(init["net.mean"])), net.std.copy_(torch.from_numpy(init["net.std"]))
        if clinical:
            lin = net.clin_fc[0]
            lin.weight.copy_(torch.from_numpy(init["net.clin_fc.0.weight"]))
            lin.bias.copy_(torch.from_numpy(init["net.clin_fc.0.bias"]))
    return net.eval()


def _replace(net: nn.Module, dotted: str, module: nn.Module) -> None:
    parent_name, _, leaf = dotted.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, leaf, module)


def prepare_qat(net: MviResNet18, first_conv: bool = False) -> list[str]:
    """Simulate what ``mvi-node quantize`` serves: every convolution int8 but the first
    (that one too with ``first_conv``, as ``--no-float-first`` serves it); outputs rounded
    where they enter a residual add, except the last block's (float)."""
    names = [k for k, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    before_add = [k for k in names if (k.endswith(".conv2") or k.endswith(".downsample.0")) and k != LAST_CONV]
    return prepare(net, skip=() if first_conv else FLOAT_CONVS, outputs=before_add)
