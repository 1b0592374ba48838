"""``mvi-node select PATH [--json] [--rules FILE]``: roles and recipes per exam."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mvi_node.select.engine import select_path
from mvi_node.select.report import build_report, format_text
from mvi_node.select.rules import RuleError, load_rules


def cmd_select(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.exists():
        print(f"{path}: no such file or folder", file=sys.stderr)
        return 2
    try:
        rules = load_rules(args.rules)
    except RuleError as exc:
        print(f"rules error: {exc}", file=sys.stderr)
        return 2
    report = build_report(select_path(path, rules), str(path))
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else format_text(report))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("select", help="give every series a role and list the recipes each exam qualifies for")
    p.add_argument("path", help="folder (read recursively, headers only) or a staged study folder")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--rules", help="site rules TOML: adds, overrides or disables shipped rules")
    p.set_defaults(func=cmd_select)
