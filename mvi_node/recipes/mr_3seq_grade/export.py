"""ONNX export (opset 17): inputs ``t1_pre``, ``portal_venous``, ``transitional`` (N, 3,
320, 320); outputs ``class_probabilities`` (N, 3), ``probability`` (N,) and ``gradcam``
(N, 3, 320, 320), the per-branch Grad-CAM computed inside the graph (network.py), so
serving needs ONNX Runtime only."""

from __future__ import annotations

from pathlib import Path

import torch

from mvi_node.recipes.mr_3seq_grade.network import SIZE, SLICES, ExportModule, ThreeSequenceNet

OPSET = 17
INPUT_NAMES = ["t1_pre", "portal_venous", "transitional"]
OUTPUT_NAMES = ["class_probabilities", "probability", "gradcam"]


def export_onnx(net: ThreeSequenceNet, path: Path | str, opset: int = OPSET) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = ExportModule(net.eval()).eval()
    args = tuple(torch.rand(1, SLICES, SIZE, SIZE) for _ in INPUT_NAMES)
    axes = {n: {0: "N"} for n in INPUT_NAMES + OUTPUT_NAMES}
    torch.onnx.export(module, args, str(path), input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
                      dynamic_axes=axes, opset_version=opset, dynamo=False)
    return path
