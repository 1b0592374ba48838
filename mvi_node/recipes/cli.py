"""``mvi-node train RECIPE --data DIR --out DIR``: train, export ONNX, write manifest + card."""

from __future__ import annotations

import argparse

from mvi_node.recipes import RECIPES, training_module


def cmd_train(args: argparse.Namespace) -> int:
    return int(training_module(args.recipe).main(args) or 0)


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a recipe on an mvi-node synth folder; export ONNX + manifest")
    p.add_argument("recipe", choices=sorted(RECIPES))
    p.add_argument("--data", required=True, help="folder written by `mvi-node synth ct` (manifest.json)")
    p.add_argument("--out", required=True, help="model folder to write (ONNX, manifest.toml, MODEL_CARD.md)")
    p.add_argument("--test", help="separate synth folder (other seed/vendor mix) for the held-out evaluation")
    p.add_argument("--cache", help="crop cache folder (default: <data>/.cache/<recipe>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=12, help="image-only epochs (early stop on validation AUC)")
    p.add_argument("--clinical-epochs", type=int, default=4, help="clinical variant fine-tuning epochs")
    p.add_argument("--slices-per-patient", type=int, default=3, help="tumour slices sampled per patient per epoch")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--max-minutes", type=float, help="wall-clock budget for training both variants")
    p.add_argument("--max-steps", type=int, help="stop each variant after this many SGD steps (smoke tests)")
    p.add_argument("--version", default="0.1.0", help="model version written to the manifest")
    p.set_defaults(func=cmd_train)
