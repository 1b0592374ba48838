"""``mvi-node cohort check``: every row through the serving path, as a table and a summary.

Per row: whether the exam was found, the series selected, the ROI source, the label and
the problems (row, column, reason) that make it unusable, or warnings that do not
(clinical values not understood, factors missing). Nothing in it names a patient: rows
by number, folders not quoted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from mvi_node.cohort.prepare import RowOutcome, describe, prepare_rows
from mvi_node.cohort.table import Cohort
from mvi_node.infer.recipe import Recipe
from mvi_node.select.rules import RuleSet


@dataclass(frozen=True)
class CheckReport:
    cohort: Cohort
    recipe: str
    label: str
    outcomes: tuple[RowOutcome, ...]

    @property
    def unusable(self) -> list[RowOutcome]:
        return [o for o in self.outcomes if not o.usable]

    @property
    def ok(self) -> bool:
        """Every row usable (and at least one row)."""
        return bool(self.outcomes) and not self.unusable

    def summary(self) -> dict[str, Any]:
        return {"recipe": self.recipe, **describe(self.cohort, self.outcomes, self.label),
                "unusable_rows": len(self.unusable),
                "warnings": sum(len(o.warnings) for o in self.outcomes)}

    def as_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "rows": [o.as_dict() for o in self.outcomes]}


def _drop(prepared: Any) -> None:
    """A check keeps nothing of the prepared inputs."""
    return None


def check_cohort(cohort: Cohort, recipe: Recipe, rules: RuleSet | None = None,
                 progress: Callable[[RowOutcome], None] | None = None) -> CheckReport:
    """Every row of ``cohort`` prepared for ``recipe`` (see :func:`mvi_node.cohort.prepare.prepare_row`)."""
    outcomes = []
    for o in prepare_rows(cohort, recipe, rules, keep=_drop):
        outcomes.append(o)
        if progress is not None:
            progress(o)
    return CheckReport(cohort, recipe.name, recipe.endpoint.label, tuple(outcomes))


def _cell(value: Any, width: int) -> str:
    text = "-" if value in (None, "") else str(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def format_check(report: CheckReport) -> str:
    """The per-row table, each row's problems and warnings under it, and the summary."""
    head = ("row", "exam", "series", "ROI", report.label or "label", "status")
    widths = (5, 5, 26, 8, max(5, len(report.label)), 8)
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip()]
    for o in report.outcomes:
        cells = (o.row.row, "yes" if o.exam_found else "no", o.series, o.roi_source, o.label,
                 "ok" if o.usable else "UNUSABLE")
        lines.append("  ".join(_cell(c, w).ljust(w) for c, w in zip(cells, widths)).rstrip())
        for p in o.problems:
            lines.append(f"       error: {p}")
        for w in o.warnings:
            lines.append(f"       warning: row {o.row.row}, {w}")
    s = report.summary()
    lines.append("")
    lines.append(f"cohort {s['source']} for recipe {report.recipe}: {s['rows']} rows, {s['usable_rows']} usable, "
                 f"{s['unusable_rows']} unusable, {s['patients']} patients")
    if "prevalence" in s:
        lines.append(f"{report.label}: {s['positives']} positive of {s['usable_rows']} usable "
                     f"(prevalence {s['prevalence']:.2f})")
    elif "classes" in s:
        lines.append(f"{report.label}: " + ", ".join(f"{k} {v}" for k, v in s["classes"].items()))
    if s.get("manufacturers"):
        lines.append("manufacturers: " + ", ".join(f"{k} {v}" for k, v in s["manufacturers"].items()))
    if s.get("left_out"):
        lines.append("unusable because: " + "; ".join(f"{k} ({v})" for k, v in s["left_out"].items()))
    return "\n".join(lines)
