"""ONNX export (opset 17) with two outputs, ``probability`` and ``gradcam``.

Grad-CAM is part of the graph (see network.py), so serving needs ONNX Runtime only.
The batch axis is dynamic: one run per patient, all tumour slices at once.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mvi_node.recipes.ct_ap_resnet18 import preprocess as pp
from mvi_node.recipes.ct_ap_resnet18.network import N_CLINICAL, MviResNet18, export_module

OPSET = 17


def export_onnx(net: MviResNet18, path: Path | str, opset: int = OPSET) -> Path:
    """Write ``net`` (eval mode) as ONNX; inputs ``image`` (N,3,256,256) [+ ``clinical`` (N,9)]."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    module = export_module(net).eval()
    image = torch.rand(2, pp.CHANNELS, pp.SIZE, pp.SIZE)
    args: tuple = (image, torch.rand(2, N_CLINICAL)) if net.clinical else (image,)
    names = ["image", "clinical"] if net.clinical else ["image"]
    axes = {n: {0: "N"} for n in names} | {"probability": {0: "N"}, "gradcam": {0: "N"}}
    torch.onnx.export(module, args, str(path), input_names=names, output_names=["probability", "gradcam"],
                      dynamic_axes=axes, opset_version=opset, dynamo=False)
    return path
