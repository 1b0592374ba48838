"""``mvi-node train RECIPE ...``: train a recipe, export its model folder (ONNX or arrays,
manifest with sha256, model card). Every registered recipe with a trainer is a
sub-command and adds its own options; the shared ones are ``--out``, ``--seed`` and
``--version``.
"""

from __future__ import annotations

import argparse

from mvi_node.infer.catalog import RecipeCatalog


def cmd_train(args: argparse.Namespace) -> int:
    return args.recipe_obj.train(args)


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a recipe; write a servable model folder (ONNX + manifest + card)")
    rsub = p.add_subparsers(dest="recipe", required=True, metavar="RECIPE")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="model folder to write (ONNX, manifest.toml, MODEL_CARD.md)")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--version", default="0.1.0", help="model version written to the manifest")
    for recipe in RecipeCatalog.discover():
        if not recipe.trainer:
            continue
        r = rsub.add_parser(recipe.name, parents=[common], help=recipe.summary)
        recipe.add_train_arguments(r)
        r.set_defaults(func=cmd_train, recipe_obj=recipe)
