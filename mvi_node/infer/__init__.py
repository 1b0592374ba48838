"""Inference stage: the recipe interface and registry, model folders, the engine.

- :mod:`.recipe`: the :class:`Recipe` base class and its value types (recipes import it);
- :mod:`.catalog`: the one recipe registry, filled from ``mvi_node.recipes`` entry points;
- :mod:`.manifest`, :mod:`.registry`: verified model folders, highest version wins;
- :mod:`.engine`: every served recipe over one exam -> :class:`RecipeResult`.
"""

from mvi_node.infer.catalog import RecipeCatalog
from mvi_node.infer.engine import Engine, RecipeResult, infer_path, pick_providers
from mvi_node.infer.manifest import ManifestError, ModelInfo, load_model
from mvi_node.infer.recipe import Endpoint, ExamInputs, Finding, KeySlice, NotEvaluated, Prediction, Recipe, RecipeError
from mvi_node.infer.registry import ModelRegistry

__all__ = ["Endpoint", "Engine", "ExamInputs", "Finding", "KeySlice", "ManifestError", "ModelInfo", "ModelRegistry",
           "NotEvaluated", "Prediction", "Recipe", "RecipeCatalog", "RecipeError", "RecipeResult", "infer_path",
           "load_model", "pick_providers"]
