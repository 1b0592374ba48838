"""ONNX export (opset 17): input ``image`` (1, channels, z, y, x), output ``probabilities``; spatial axes dynamic.

Shared with the MR segmenter: :mod:`mvi_node.recipes.seg_network`."""

from __future__ import annotations

from mvi_node.recipes.seg_network import OPSET, export_onnx

__all__ = ["OPSET", "export_onnx"]
