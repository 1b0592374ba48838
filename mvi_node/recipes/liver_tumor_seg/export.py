"""ONNX export (opset 17): input ``image`` (1, channels, z, y, x), output ``probabilities``; spatial axes dynamic."""

from __future__ import annotations

from pathlib import Path

import torch

from mvi_node.recipes.liver_tumor_seg.network import WithSoftmax

OPSET = 17


def export_onnx(net: torch.nn.Module, path: Path | str, patch=(32, 96, 96), opset: int = OPSET,
                channels: int = 1) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = WithSoftmax(net.eval()).eval()
    x = torch.rand(1, channels, *patch)
    axes = {"image": {0: "N", 2: "D", 3: "H", 4: "W"}, "probabilities": {0: "N", 2: "D", 3: "H", 4: "W"}}
    torch.onnx.export(module, (x,), str(path), input_names=["image"], output_names=["probabilities"],
                      dynamic_axes=axes, opset_version=opset, dynamo=False)
    return path
