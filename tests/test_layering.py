"""The package's floors: no import runs back up, and no two packages import each other.

Every ``import``/``from ... import`` of ``mvi_node`` modules anywhere in a file counts,
the ones inside functions too: a lazy import is still a dependency. A new top-level
package or module must be given a floor here (docs/architecture.md shows the same map).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mvi_node"

#: higher floors may import lower ones; nothing imports a higher or an equal floor's package
FLOORS: dict[str, int] = {
    "__main__": 8,
    "commands": 7,
    "app": 6,
    "pipeline": 5, "cohort": 5, "orthanc": 5, "admin": 5,
    "recipes": 4, "report": 4, "dispatch": 4,
    "infer": 3, "receive": 3,
    "stage": 2, "replay": 2, "preprocess": 2,
    "select": 1, "roi": 1, "clinical": 1, "jobs": 1, "synth": 1,
    "config": 0, "metrics": 0, "common": 0, "evaluation": 0, "concepts": 0, "logs": 0, "__init__": 0,
}


def _unit(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_units(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "mvi_node":  # from mvi_node import concepts / __version__
                names = [f"mvi_node.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "mvi_node" and len(parts) > 1:
                found.add(parts[1] if parts[1] != "__version__" else "__init__")
    return found


def import_graph() -> dict[str, dict[str, list[str]]]:
    """unit -> imported unit -> files that import it."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        me = _unit(path)
        for other in _imported_units(path):
            if other != me:
                graph[me][other].append(str(path.relative_to(PACKAGE.parent)))
    return graph


def test_every_package_has_a_floor():
    units = {_unit(p) for p in PACKAGE.rglob("*.py")}
    assert not units - set(FLOORS), f"give these a floor in tests/test_layering.py: {sorted(units - set(FLOORS))}"


def test_no_import_runs_back_up_or_sideways():
    wrong = []
    for me, deps in import_graph().items():
        for other, files in deps.items():
            if FLOORS.get(other, -1) >= FLOORS.get(me, 99):
                wrong.append(f"{me} (floor {FLOORS.get(me)}) imports {other} (floor {FLOORS.get(other)}) in {files}")
    assert not wrong, "\n".join(wrong)


def test_no_two_packages_import_each_other():
    graph = import_graph()
    mutual = sorted({tuple(sorted((a, b))) for a, deps in graph.items() for b in deps if a in graph.get(b, {})})
    assert not mutual, mutual
