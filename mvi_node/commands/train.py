"""``mvi-node train RECIPE --cohort COHORT --out MODEL_DIR ...``: train a recipe on a cohort,
export its model folder (ONNX or arrays, manifest with sha256, model card).

Every registered recipe with a trainer is a sub-command and adds its own options; the
shared ones are ``--cohort`` (a CSV, a folder holding ``cohort.csv``, or a folder
written by ``mvi-node synth``), ``--test`` (a second cohort, all of it held out),
``--out``, ``--seed``, ``--version`` and the split fractions. This command builds the
inputs through the serving path (:mod:`mvi_node.cohort.prepare`: the node's selection,
the recipe's ``qualifies``, ROI from the exam's annotations, the recipe's ``prepare``),
splits them by patient, and hands the recipe's trainer

- ``args.examples``: a list of :class:`~mvi_node.infer.recipe.TrainingExample`
  (``split`` train / validation / test);
- ``args.cohort``: the cohort's description (source, rows, usable rows, prevalence,
  manufacturers, splits, why rows were left out) for the manifest and model card;
  the path given on the command line stays in ``args.cohort_path``.

A trainer module may define ``training_input(prepared)``: the examples then hold what
it returns instead of the whole prepared object. Rows are named by number; no patient
identifier reaches the log, the manifest or the card.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from mvi_node.infer.catalog import RecipeCatalog


def _bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="exam", file=sys.stderr, dynamic_ncols=True)


def _examples(path: str, recipe, args: argparse.Namespace, keep, desc: str, held_out: bool = False):
    """(examples, description) of the cohort at ``path``; problems written to stderr."""
    from tqdm import tqdm

    from mvi_node.cohort import build_examples, open_cohort

    cohort = open_cohort(path)
    bar = _bar(len(cohort), desc)
    usable = 0

    def step(outcome) -> None:
        nonlocal usable
        usable += outcome.usable
        bar.update(1)
        bar.set_postfix(usable=usable, refresh=False)
        for p in outcome.problems[:1]:
            tqdm.write(f"left out: {p}", file=sys.stderr)

    try:
        built = build_examples(cohort, recipe, seed=args.seed, validation=args.val_fraction,
                               test=args.test_fraction, keep=keep, progress=step, split=not held_out)
    finally:
        bar.close()
    examples = list(built.examples)
    if held_out:
        from dataclasses import replace

        examples = [replace(e, split="test") for e in examples]
    return examples, built.describe() if not held_out else {**built.describe(), "splits": {"test": len(examples)}}


def cmd_train(args: argparse.Namespace) -> int:
    from mvi_node.cohort import CohortError

    recipe = args.recipe_obj
    if not args.cohort and getattr(importlib.import_module(recipe.trainer), "SYNTHETIC_DEFAULT", False):
        # the trainer makes its own synthetic data (liver_tumor_seg: volumes with truth masks)
        args.cohort_path, args.examples, args.cohort = None, [], None
        return recipe.train(args)
    if not args.cohort:
        print("mvi-node train: give --cohort COHORT (a CSV, a folder holding cohort.csv, or a synth folder)",
              file=sys.stderr)
        return 2
    if getattr(args, "deprecated_data", False):
        print("mvi-node train: --data is deprecated; it reads the folder as a cohort, like --cohort", file=sys.stderr)
    keep = getattr(importlib.import_module(recipe.trainer), "training_input", None)
    t0 = time.time()
    try:
        examples, description = _examples(args.cohort, recipe, args, keep, "exams prepared")
        test_description = None
        if args.test:
            test, test_description = _examples(args.test, recipe, args, keep, "test exams prepared", held_out=True)
            shared = {e.group for e in examples} & {e.group for e in test}
            if shared:
                print(f"warning: {len(shared)} patient(s) of the test cohort are also in the training cohort",
                      file=sys.stderr)
            examples += test
    except (CohortError, ValueError) as exc:
        print(f"mvi-node train: {exc}", file=sys.stderr)
        return 2
    if not any(e.split == "train" for e in examples):
        print(f"mvi-node train: no usable training exam in {args.cohort} "
              f"(run `mvi-node cohort check {args.cohort} --recipe {recipe.name}`)", file=sys.stderr)
        return 1
    if test_description is not None:
        description["test_cohort"] = test_description
    args.cohort_path, args.examples, args.cohort = args.cohort, examples, description
    args.prepare_seconds = round(time.time() - t0, 1)
    return args.recipe_obj.train(args)


class _DeprecatedData(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        namespace.cohort = values
        namespace.deprecated_data = True


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a recipe on a cohort; write a servable model folder "
                                            "(ONNX + manifest + card)")
    rsub = p.add_subparsers(dest="recipe", required=True, metavar="RECIPE")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cohort", help="a CSV (one row per exam), a folder holding cohort.csv, or a folder "
                                         "written by `mvi-node synth`")
    common.add_argument("--data", action=_DeprecatedData, dest="cohort", metavar="COHORT",
                        help="deprecated alias of --cohort")
    common.add_argument("--test", metavar="COHORT", help="a second cohort held out whole for the test metrics")
    common.add_argument("--out", required=True, help="model folder to write (ONNX, manifest.toml, MODEL_CARD.md)")
    common.add_argument("--seed", type=int, default=0, help="seed of the patient split and of training")
    common.add_argument("--val-fraction", type=float, default=0.2,
                        help="patients held out for validation (threshold, early stop), per label")
    common.add_argument("--test-fraction", type=float, default=0.0,
                        help="patients of --cohort held out for the test metrics, per label")
    common.add_argument("--version", default="0.1.0", help="model version written to the manifest")
    for recipe in RecipeCatalog.discover():
        if not recipe.trainer:
            continue
        r = rsub.add_parser(recipe.name, parents=[common], help=recipe.summary,
                            description="Rows without a value in a split column are split by patient, seeded; "
                                        "a split column (train/validation/test) wins.")
        recipe.add_train_arguments(r)
        r.set_defaults(func=cmd_train, recipe_obj=recipe)
