"""The model each recipe serves travels with an install (pyproject's data-files): a wheel
or `pip install .` has no checkout, and mvi_node.infer.registry then reads the installed
copy. A served folder left out is served from a checkout and silently replaced by an
older one elsewhere (liver_tumor_seg 0.7.0 was, until this test)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from mvi_node.infer import ModelRegistry

ROOT = Path(__file__).resolve().parents[1]


def test_the_served_model_of_every_recipe_is_installed_with_the_package():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["data-files"]
    registry = ModelRegistry([ROOT / "models"])
    recipes = sorted({m.parent.parent.name for m in (ROOT / "models").glob("*/*/manifest.toml")})
    assert len(recipes) >= 4
    for recipe in recipes:
        folder = str(registry.get(recipe).folder.relative_to(ROOT))
        assert data.get("share/mvi-node/" + folder) == [folder + "/*"], f"{folder} is not in [tool.setuptools.data-files]"
