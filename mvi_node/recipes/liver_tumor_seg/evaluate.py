"""Segmentation metrics through the served path (ONNX Runtime, the node's own selection). Torch-free.

Shared with the MR segmenter: :mod:`mvi_node.recipes.seg_evaluate`."""

from __future__ import annotations

from mvi_node.recipes.seg_evaluate import (OrtRunner, dice, evaluate_exams, exam_metrics, summarize,
                                           truth_on_series)

__all__ = ["OrtRunner", "dice", "evaluate_exams", "exam_metrics", "summarize", "truth_on_series"]
