"""The one recipe registry: every recipe found through the ``mvi_node.recipes`` entry points.

The package's own recipes are declared in its ``pyproject.toml``; a site's recipe
package declares its own, e.g.::

    [project.entry-points."mvi_node.recipes"]
    my_recipe = "my_site_recipes.my_recipe:MyRecipe"

Each entry point names a :class:`~mvi_node.infer.recipe.Recipe` subclass (or an
instance). It is checked when loaded; a broken one is refused with a
:class:`~mvi_node.infer.recipe.RecipeError` that names the entry point and the missing
piece, and the rest are still served.
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points
from typing import Iterable, Iterator

from mvi_node.infer.recipe import Recipe, RecipeError
from mvi_node.select.recipes import RecipeNeeds
from mvi_node.select.rules import ROLES

log = logging.getLogger(__name__)

GROUP = "mvi_node.recipes"


def _check(recipe: Recipe, where: str) -> Recipe:
    if not isinstance(recipe, Recipe):
        raise RecipeError(f"{where}: {type(recipe).__name__} is not a mvi_node.infer.recipe.Recipe")
    if not recipe.name or not recipe.name.isidentifier():
        raise RecipeError(f"{where}: recipe needs a name that is an identifier, got {recipe.name!r}")
    if not recipe.requires:
        raise RecipeError(f"recipe {recipe.name!r} ({where}): requires no series role")
    bad = [r for r in recipe.requires if r not in ROLES or r == "other"]
    if bad:
        raise RecipeError(f"recipe {recipe.name!r} ({where}): unknown roles {bad}; known: {sorted(ROLES)}")
    if not recipe.modalities:
        raise RecipeError(f"recipe {recipe.name!r} ({where}): declares no modality")
    return recipe


def load_entry_point(ep: EntryPoint) -> Recipe:
    where = f"entry point {ep.name} = {ep.value}"
    try:
        obj = ep.load()
    except Exception as exc:  # noqa: BLE001 - a broken site package must not stop the node
        raise RecipeError(f"{where}: cannot be imported ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, type):
        if not issubclass(obj, Recipe):
            raise RecipeError(f"{where}: {obj.__name__} is not a mvi_node.infer.recipe.Recipe subclass")
        try:
            obj = obj()
        except TypeError as exc:  # abstract methods left unimplemented
            raise RecipeError(f"{where}: {exc}") from exc
    return _check(obj, where)


class RecipeCatalog:
    """Recipes by name, in entry-point name order."""

    def __init__(self, recipes: Iterable[Recipe] = ()) -> None:
        self._recipes: dict[str, Recipe] = {}
        self.refused: list[str] = []
        for recipe in recipes:
            self.add(recipe)

    @classmethod
    def discover(cls, group: str = GROUP) -> "RecipeCatalog":
        catalog = cls()
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            try:
                catalog.add(load_entry_point(ep))
            except RecipeError as exc:
                catalog.refused.append(str(exc))
                log.error("recipe refused: %s", exc)
        if not catalog._recipes and not catalog.refused:
            log.warning("no recipe registered under entry-point group %s (is mvi-node installed?)", group)
        return catalog

    def add(self, recipe: Recipe) -> None:
        recipe = _check(recipe, f"recipe {getattr(recipe, 'name', '?')!r}")
        if recipe.name in self._recipes and type(self._recipes[recipe.name]) is not type(recipe):
            raise RecipeError(f"recipe {recipe.name!r} registered twice "
                              f"({type(self._recipes[recipe.name]).__module__} and {type(recipe).__module__})")
        self._recipes[recipe.name] = recipe

    def get(self, name: str) -> Recipe:
        try:
            return self._recipes[name]
        except KeyError:
            raise RecipeError(f"unknown recipe {name!r}; known: {sorted(self._recipes)}") from None

    def names(self) -> list[str]:
        return list(self._recipes)

    def __iter__(self) -> Iterator[Recipe]:
        return iter(self._recipes.values())

    def __len__(self) -> int:
        return len(self._recipes)

    def only(self, names: Iterable[str]) -> "RecipeCatalog":
        """The recipes among ``names`` (those with a model to serve)."""
        keep = set(names)
        return RecipeCatalog(r for r in self if r.name in keep)

    def needs(self) -> list[RecipeNeeds]:
        """What selection needs to say which recipes an exam qualifies for (segmentation
        recipes are the others' automatic ROI, not a result of their own: left out)."""
        return [RecipeNeeds(r.name, tuple(r.requires), r.summary, frozenset(r.modalities), r.qualifies)
                for r in self if r.task == "prediction"]
