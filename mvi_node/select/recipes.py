"""Which recipes an exam qualifies for, given what each recipe needs.

Selection does not know the recipes: the caller passes their needs (the recipe catalog
of :mod:`mvi_node.infer.catalog` builds them), so a recipe without code is never listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from mvi_node.select.rules import ROLES


@dataclass(frozen=True)
class RecipeNeeds:
    name: str
    requires: tuple[str, ...]
    summary: str = ""
    modalities: frozenset[str] = frozenset()
    #: (winners role -> unit) -> (qualified, why not); default: every required role present
    qualifies: Callable[[Mapping[str, Any]], tuple[bool, str]] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        bad = [r for r in self.requires if r not in ROLES or r == "other"]
        if bad or not self.requires:
            raise ValueError(f"recipe {self.name!r}: required roles must be from the role vocabulary, "
                             f"got {bad or list(self.requires)}")

    def check(self, winners: Mapping[str, Any]) -> tuple[bool, str]:
        if self.qualifies is not None:
            return self.qualifies(winners)
        absent = [r for r in self.requires if r not in winners]
        return not absent, ("no series holds role " + ", ".join(absent)) if absent else ""


def evaluate(winners: Mapping[str, Any], needs: Iterable[RecipeNeeds],
             modalities: Iterable[str] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(qualified, not qualified) for ``winners`` = {role: unit uid}. A recipe whose
    modalities the exam does not have is neither: it does not apply to the exam."""
    present = set(modalities) if modalities is not None else None
    ok, missing = [], []
    for recipe in needs:
        if present is not None and recipe.modalities and not (recipe.modalities & present):
            continue
        qualified, why = recipe.check(winners)
        if qualified:
            ok.append({"name": recipe.name, "inputs": {r: winners[r] for r in recipe.requires}})
        else:
            missing.append({"name": recipe.name, "missing": [r for r in recipe.requires if r not in winners],
                            "why": why})
    return ok, missing
