"""Inference stage: model registry (manifest checks), ONNX Runtime engine, ``mvi-node infer``.

Public API for the report stage: :func:`infer_staged` (a node job), :func:`infer_path`,
:meth:`Engine.run_exam` ->
:class:`StudyResult` (probability, decision, per-slice probabilities, SOP Instance UIDs,
crop boxes, Grad-CAM maps, model identity).
"""

from mvi_node.infer.engine import Engine, StudyResult, infer_path, infer_staged, pick_providers
from mvi_node.infer.manifest import ManifestError, ModelInfo, load_model
from mvi_node.infer.registry import ModelRegistry

__all__ = ["Engine", "ManifestError", "ModelInfo", "ModelRegistry", "StudyResult", "infer_path", "infer_staged", "load_model",
           "pick_providers"]
