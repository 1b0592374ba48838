"""Detection on a test set broken down by what the generator drew: each truth lesion's
arterial enhancement pattern (``mvi_node.synth.realism.PATTERNS``, varied exams only),
its size, and the exam's vendor. Torch-free.

This is how 0.1.0's misses were diagnosed: they were the lesions with almost no contrast
on the arterial phase (hypo- and iso-enhancing), whatever their size, and they all stand
out on the portal venous phase; so 0.2.0 reads that phase as a second channel.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

SIZES = ((10.0, 20.0, "10-20 mm"), (20.0, 40.0, "20-40 mm"), (40.0, 1e9, ">= 40 mm"))


def lesion_facts(seed: int, index: int, vendor: str, matrix: int, realism: str) -> list[dict[str, Any]]:
    """Per truth lesion of one generated CT exam: its pattern and its median HU contrast
    against the tumour-free liver on the arterial and portal venous phases."""
    from mvi_node.synth import simulate_exam
    from mvi_node.synth.anatomy import L

    sim = simulate_exam("ct", seed, index, phases=("arterial", "portal"), realism=realism, hard_cases="none",
                        vendor=vendor, matrix=matrix, annotations="none")
    liver = (sim.labels == int(L.LIVER)) & (sim.truth == 0)
    patterns = sim.variation.patterns if sim.variation is not None else ["hyper"] * len(sim.lesions)
    out = []
    for k in range(1, len(sim.lesions) + 1):
        m = sim.truth == k
        con = {p: round(float(np.median(sim.volumes[p][m]) - np.median(sim.volumes[p][liver])), 1) if m.any() else None
               for p in ("arterial", "portal")}
        out.append({"pattern": patterns[k - 1], "arterial_contrast_hu": con["arterial"],
                    "portal_contrast_hu": con["portal"]})
    return out


def detection_table(rows: Sequence[Mapping[str, Any]], facts: Sequence[Sequence[Mapping[str, Any]]]) -> dict:
    """Detected / total of the lesions >= 10 mm by pattern, size and vendor."""
    groups: dict[str, dict[str, list[int]]] = {"pattern": {}, "size": {}, "vendor": {}}
    for row, exam in zip(rows, facts):
        for t in row["truth_lesions"]:
            if not t["large"]:
                continue
            f = exam[t["lesion"] - 1]
            size = next(name for lo, hi, name in SIZES if lo <= t["diameter_mm"] < hi)
            for group, key in (("pattern", f["pattern"]), ("size", size), ("vendor", row["vendor"])):
                cell = groups[group].setdefault(key, [0, 0])
                cell[0] += int(t["detected"])
                cell[1] += 1
    return groups


def table_markdown(tables: Mapping[str, Mapping[str, Mapping[str, list[int]]]]) -> str:
    """One markdown table: a row per group value, a column per model version."""
    versions = list(tables)
    lines = ["| lesions >= 10 mm | " + " | ".join(versions) + " |", "|---|" + "---|" * len(versions)]
    first = tables[versions[0]]
    for group in ("pattern", "size", "vendor"):
        for key in sorted(first.get(group, {})):
            cells = []
            for v in versions:
                d, n = tables[v].get(group, {}).get(key, [0, 0])
                cells.append(f"{d}/{n}")
            lines.append(f"| {group}: {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
