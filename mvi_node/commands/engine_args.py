"""The engine a command line asks for: ``--models`` roots and ``--providers``, once for
``infer``, ``segment`` and ``evaluate``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def model_roots(args: argparse.Namespace) -> list[Path]:
    """``--models`` folders, else the shipped models."""
    from mvi_node.infer.registry import DEFAULT_ROOT

    return [Path(p) for p in (getattr(args, "models", None) or [])] or [DEFAULT_ROOT]


def provider_choice(providers: str | list[str] | None) -> dict[str, Any]:
    """Engine keyword for an explicit provider order (``"A,B"`` or a list); {} for the default."""
    if isinstance(providers, str):
        providers = [p for p in providers.split(",") if p]
    return {"providers": list(providers)} if providers else {}


def cli_engine(args: argparse.Namespace, **engine_kw: Any):
    """An Engine over ``--models`` with ``--providers``; None (after printing why) when a
    model folder is refused."""
    from mvi_node.infer.engine import Engine
    from mvi_node.infer.manifest import ManifestError
    from mvi_node.infer.registry import ModelRegistry

    try:
        registry = ModelRegistry(model_roots(args))
    except ManifestError as exc:
        print(f"model refused: {exc}", file=sys.stderr)
        return None
    return Engine(registry, **provider_choice(getattr(args, "providers", None)), **engine_kw)
