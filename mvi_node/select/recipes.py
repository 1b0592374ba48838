"""Which model recipes an exam can run: each recipe declares the roles it needs.

New recipes call :func:`register` (from their own module); the engine never changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mvi_node.select.rules import ROLES


@dataclass(frozen=True)
class RecipeNeeds:
    name: str
    requires: tuple[str, ...]
    summary: str = ""


_REGISTRY: dict[str, RecipeNeeds] = {}


def register(name: str, requires: tuple[str, ...] | list[str], summary: str = "") -> RecipeNeeds:
    """Declare (or redeclare) a recipe's required roles."""
    bad = [r for r in requires if r not in ROLES or r == "other"]
    if bad or not requires:
        raise ValueError(f"recipe {name!r}: required roles must be from the role vocabulary, got {bad or requires}")
    recipe = RecipeNeeds(name, tuple(requires), summary)
    _REGISTRY[name] = recipe
    return recipe


def registered() -> list[RecipeNeeds]:
    return list(_REGISTRY.values())


register("ct_ap_resnet18", ("ct_arterial",), "Liu 2021: CT late arterial phase, ResNet-18 + clinical factors")
register(
    "mr_3seq_grade",
    ("mr_t1_pre", "mr_portal_venous", "mr_transitional"),
    "Sun 2022: T1 pre + portal venous + delayed (3 min), MVI grade M0/M1/M2",
)


def evaluate(winners: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(qualified, not qualified) for ``winners`` = {role: unit uid}."""
    ok, missing = [], []
    for recipe in registered():
        absent = [r for r in recipe.requires if r not in winners]
        if absent:
            missing.append(
                {
                    "name": recipe.name,
                    "missing": absent,
                    "why": "no series holds role " + ", ".join(absent),
                }
            )
        else:
            ok.append({"name": recipe.name, "inputs": {r: winners[r] for r in recipe.requires}})
    return ok, missing
