"""``mvi-node select PATH [--json] [--rules FILE]``: roles and recipes per exam.

PATH is a folder (read recursively, headers only), a file, a staged study folder
(``<data_dir>/staging/<StudyInstanceUID>``: the other staged studies of the same exam
are read too, as the study job does), or a StudyInstanceUID staged under ``--data-dir``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mvi_node.infer.catalog import RecipeCatalog
from mvi_node.pipeline import selection_report
from mvi_node.select.engine import select_path
from mvi_node.select.report import build_report, format_text
from mvi_node.select.rules import RuleError, load_rules
from mvi_node.stage.index import StagingIndex
from mvi_node.stage.paths import InvalidUID, check_uid


def _staged(path: Path, args: argparse.Namespace) -> tuple[Path, str] | None:
    """(staging dir, study uid) when PATH names a staged study."""
    if path.is_dir() and path.parent.name == "staging":
        try:
            return path.parent, check_uid(path.name, "study folder")
        except InvalidUID:
            return None
    if not path.exists() and (args.data_dir or args.config):
        try:
            uid = check_uid(str(path), "StudyInstanceUID")
        except InvalidUID:
            return None
        from mvi_node.config import load_settings

        settings = load_settings(args.config, {"data_dir": args.data_dir})
        return settings.staging_dir, uid
    return None


def cmd_select(args: argparse.Namespace) -> int:
    path = Path(args.path)
    needs = RecipeCatalog.discover().needs()  # the recipes this installation has code for
    try:
        rules_file = args.rules
        staged = _staged(path, args)
        if staged is not None:
            if not (staged[0] / staged[1]).is_dir():
                print(f"study {staged[1]} is not staged under {staged[0]}", file=sys.stderr)
                return 2
            index_file = staged[0].parent / "index.sqlite3"  # the node's index, when PATH is its staging
            index = StagingIndex(index_file) if index_file.is_file() else None
            report = selection_report(staged[0], staged[1], rules_file, needs, index)[1]
        elif not path.exists():
            print(f"{path}: no such file or folder", file=sys.stderr)
            return 2
        else:
            report = build_report(select_path(path, load_rules(rules_file)), str(path), needs)
    except RuleError as exc:
        print(f"rules error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else format_text(report))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("select", help="give every series a role and list the recipes each exam qualifies for")
    p.add_argument("path", help="folder or file (headers only), staged study folder, or a staged StudyInstanceUID")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--rules", help="site rules TOML: adds, overrides or disables shipped rules")
    p.add_argument("--config", help="TOML configuration file (to find a staged study by UID)")
    p.add_argument("--data-dir", help="data directory (to find a staged study by UID)")
    p.set_defaults(func=cmd_select)
