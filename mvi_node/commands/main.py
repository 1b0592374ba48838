"""``mvi-node`` command line: serve, status, dispatch, config here; the rest in sibling modules."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

from mvi_node import __version__
from mvi_node.config import ConfigError, load_settings, masked_dump

# Modules exposing ``register(subparsers)``; stages add theirs here.
COMMAND_MODULES: tuple[str, ...] = ("mvi_node.commands.select", "mvi_node.commands.synth", "mvi_node.commands.train",
                                     "mvi_node.commands.infer", "mvi_node.commands.demo",
                                     "mvi_node.commands.cohort", "mvi_node.commands.evaluate", "mvi_node.commands.calibrate",
                                     "mvi_node.commands.segment", "mvi_node.commands.jobs",
                                     "mvi_node.commands.quantize", "mvi_node.commands.replay")


def _settings_from(args: argparse.Namespace, extra: dict[str, Any] | None = None):
    overrides = {"data_dir": getattr(args, "data_dir", None)}
    overrides.update(extra or {})
    return load_settings(getattr(args, "config", None), overrides)


def _onnxruntime_missing() -> bool:
    try:
        import onnxruntime  # noqa: F401 - the node serves nothing without it
    except ImportError:
        return True
    return False


def cmd_serve(args: argparse.Namespace) -> int:
    if _onnxruntime_missing():
        print("ONNX Runtime is not installed: install the node with its 'cpu' extra "
              "(pip install 'mvi-node[cpu]'), or 'gpu' on a machine with CUDA (pip install 'mvi-node[gpu]')",
              file=sys.stderr)
        return 2
    from mvi_node.app.node import serve

    settings = _settings_from(
        args,
        {
            "listener.ae_title": args.ae_title,
            "listener.port": args.port,
            "completion.quiet_seconds": args.quiet_seconds,
            "admin.port": args.admin_port,
            "dispatch.destinations": args.destination or None,
        },
    )
    serve(settings)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from mvi_node.commands.status import format_status, node_status

    status = node_status(_settings_from(args))
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def cmd_dispatch_retry(args: argparse.Namespace) -> int:
    from mvi_node.jobs import open_job_store

    settings = _settings_from(args)
    store = open_job_store(settings.jobs.backend, settings.jobs_db)
    job = store.get(args.job)
    if job is None:
        print(f"no job {args.job}", file=sys.stderr)
        return 1
    job = store.requeue(args.job)
    print(f"job {job.id} ({job.kind}) queued again")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    load_settings(args.file)
    print(f"{args.file}: OK")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    import tomli_w

    print(tomli_w.dumps(_strip_none(masked_dump(_settings_from(args)))), end="")
    return 0


def _strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mvi-node", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mvi-node {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML configuration file")
    common.add_argument("--data-dir", help="data directory (staging, index, jobs)")

    p = sub.add_parser("serve", parents=[common], help="run the DICOM node in the foreground")
    p.add_argument("--ae-title")
    p.add_argument("--port", type=int)
    p.add_argument("--quiet-seconds", type=float, help="study completion quiet period")
    p.add_argument("--admin-port", type=int, help="admin HTTP port (health, metrics, jobs)")
    p.add_argument(
        "--destination", action="append", metavar="AE@HOST:PORT", help="send results here (repeatable)"
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("status", parents=[common], help="studies, instances, duplicates, jobs by state")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("dispatch", help="outbound result jobs")
    dsub = p.add_subparsers(dest="dispatch_command", required=True)
    d = dsub.add_parser("retry", parents=[common], help="queue a failed or dead-lettered job again")
    d.add_argument("job", type=int)
    d.set_defaults(func=cmd_dispatch_retry)

    p = sub.add_parser("config", help="check or show the configuration")
    csub = p.add_subparsers(dest="config_command", required=True)
    c = csub.add_parser("check", help="validate a TOML configuration file")
    c.add_argument("file")
    c.set_defaults(func=cmd_config_check)
    c = csub.add_parser("show", parents=[common], help="effective values, secrets masked")
    c.set_defaults(func=cmd_config_show)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
