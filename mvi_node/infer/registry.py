"""Which models the node serves: every ``<root>/<recipe>/<version>/manifest.toml``.

Roots are the repository's ``models/`` plus the directories a site configures, so a
site serves its own re-trained model by dropping a folder in: no code change. All
manifests are verified at start (sha256, input/output names and shapes); any mismatch
stops the start with :class:`ManifestError` naming the folder and the reason.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Iterable

from mvi_node.infer.manifest import ManifestError, ModelInfo, load_model

log = logging.getLogger(__name__)

def _default_root() -> Path:
    """The shipped models: the checkout's ``models/`` (a clone, an editable install), else
    the copy an installed wheel carries under ``<prefix>/share/mvi-node/models``
    (pyproject's data-files), so every install finds the reference model."""
    checkout = Path(__file__).resolve().parents[2] / "models"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "mvi-node" / "models"


DEFAULT_ROOT = _default_root()


def _version_key(v: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\-+]", v))


class ModelRegistry:
    """Verified models by recipe; the highest version wins unless one is pinned."""

    def __init__(self, roots: Iterable[Path | str] | None = None, pins: dict[str, str] | None = None,
                 strict: bool = True) -> None:
        self.roots = [Path(r) for r in (roots if roots is not None else [DEFAULT_ROOT])]
        self.pins = dict(pins or {})
        self.models: dict[str, list[ModelInfo]] = {}
        self.refused: list[tuple[Path, str]] = []
        for root in self.roots:
            for mpath in sorted(root.glob("*/*/manifest.toml")) if root.is_dir() else []:
                try:
                    info = load_model(mpath.parent)
                except ManifestError as exc:
                    self.refused.append((mpath.parent, str(exc)))
                    log.error("model refused: %s", exc)
                    continue
                self.models.setdefault(info.recipe, []).append(info)
        if strict and self.refused:
            raise ManifestError("; ".join(msg for _p, msg in self.refused))

    def get(self, recipe: str) -> ModelInfo | None:
        found = self.models.get(recipe, [])
        if recipe in self.pins:
            found = [m for m in found if m.version == self.pins[recipe]]
        return max(found, key=lambda m: _version_key(m.version), default=None)

    def summary(self) -> list[dict[str, object]]:
        return [{"recipe": m.recipe, "version": m.version, "folder": str(m.folder),
                 "variants": {n: v.sha256 for n, v in m.variants.items()}}
                for ms in self.models.values() for m in ms]
