"""Model recipes: how a published method is trained and how its inputs are made.

The roles each recipe needs live in the select package's registry
(``mvi_node.select.recipes``); this registry maps a recipe name to its code: the
torch-free ``recipe`` module the inference engine uses and the ``train`` entry point.
A site adds a recipe by adding a package and one line here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

RECIPES: dict[str, str] = {"ct_ap_resnet18": "mvi_node.recipes.ct_ap_resnet18"}


def recipe_module(name: str) -> ModuleType:
    """Torch-free engine side of a recipe (constants, clinical encoding, roles)."""
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; known: {sorted(RECIPES)}")
    return importlib.import_module(RECIPES[name] + ".recipe")


def training_module(name: str) -> ModuleType:
    """Training side (imports torch): must expose ``main(args) -> int``."""
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; known: {sorted(RECIPES)}")
    return importlib.import_module(RECIPES[name] + ".pipeline")
