"""``mvi-node cohort check COHORT [--recipe NAME] [--json]``: is a cohort ready to train on?

Every row goes through the serving path (selection, the recipe's ``qualifies``, ROI from
the exam's annotations, the recipe's ``prepare``); the command prints a per-row table
(exam found, series selected, ROI source, label) with each problem as row, column and
reason, then a summary. Exit status: 0 when every row is usable, 1 when some are not,
2 when the cohort cannot be read at all.
"""

from __future__ import annotations

import argparse
import json
import sys

DEFAULT_RECIPE = "ct_ap_resnet18"


def progress_bar(total: int, desc: str):
    """A tqdm bar on stderr (exams prepared, with ETA)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="exam", file=sys.stderr, dynamic_ncols=True)


def cmd_cohort_check(args: argparse.Namespace) -> int:
    from mvi_node.cohort import CohortError, check_cohort, format_check, open_cohort
    from mvi_node.infer.catalog import RecipeCatalog
    from mvi_node.infer.recipe import RecipeError

    try:
        recipe = RecipeCatalog.discover().get(args.recipe)
        cohort = open_cohort(args.cohort)
    except (CohortError, RecipeError, OSError) as exc:
        print(f"cohort check: {exc}", file=sys.stderr)
        return 2
    bar = progress_bar(len(cohort), "exams checked")
    try:
        report = check_cohort(cohort, recipe, progress=lambda o: bar.update(1))
    finally:
        bar.close()
    print(json.dumps(report.as_dict(), indent=1) if args.json else format_check(report))
    return 0 if report.ok else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("cohort", help="cohorts of a site's own exams (CSV or synth folder)")
    csub = p.add_subparsers(dest="cohort_command", required=True)
    c = csub.add_parser("check", help="per row: exam found, series selected, ROI source, label; non-zero when "
                                      "rows are unusable")
    c.add_argument("cohort", help="a CSV, a folder holding cohort.csv, or a folder written by `mvi-node synth`")
    c.add_argument("--recipe", default=DEFAULT_RECIPE, help=f"recipe to check the rows for (default {DEFAULT_RECIPE})")
    c.add_argument("--json", action="store_true", help="the table and summary as JSON")
    c.set_defaults(func=cmd_cohort_check)
