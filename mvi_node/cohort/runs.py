"""The served model over a cohort, exactly as the node runs a routed exam.

Each row's exam is selected by the node's header rules, offered to the engine (ONNX
Runtime, the manifest's calibration applied) and the chosen recipe's result kept; rows
that could not be evaluated keep their outcome and reasons. ``mvi-node evaluate`` and
``mvi-node calibrate`` both run this; rows are named by number, never by an identifier.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from mvi_node.clinical import NullClinicalSource
from mvi_node.cohort.prepare import RowClinicalSource, iter_exams
from mvi_node.cohort.table import Cohort, CohortError, CohortRow
from mvi_node.infer.engine import Engine, RecipeResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExamRun:
    """One cohort row through the engine."""

    row: CohortRow
    outcome: str
    reasons: tuple[str, ...] = ()
    result: RecipeResult | None = None
    manufacturer: str = ""

    @property
    def evaluated(self) -> bool:
        return self.result is not None and self.result.prediction is not None

    @property
    def max_diameter_mm(self) -> float | None:
        findings = self.result.prediction.findings if self.evaluated else ()
        return findings[0].max_diameter_mm if findings else None


def _manufacturer(exam) -> str:
    for unit in exam.units:
        value = str(unit.ds.get("Manufacturer", "") or "").strip()
        if value:
            return value
    return ""


def run_cohort(cohort: Cohort, engine: Engine, recipe: str, *, clinical: bool = True,
               progress: Callable[[Iterable], Iterable] | None = None) -> list[ExamRun]:
    """Every row of ``cohort`` through ``engine``; the ``recipe``'s result per row.
    ``clinical=False`` withholds every clinical factor (the image-only variants run)."""
    chosen = engine.recipes.get(recipe)
    saved, runs = engine.clinical, []
    rows = iter_exams(cohort, chosen)
    try:
        for row, exam in (progress(rows) if progress else rows):
            if isinstance(exam, CohortError):
                runs.append(ExamRun(row, "not evaluated", (f"{exam.column}: {exam.reason}",)))
                continue
            engine.clinical = RowClinicalSource(row, cohort.clinical) if clinical else NullClinicalSource()
            mine = [r for r in engine.run_exam(exam) if r.recipe == chosen.name]
            maker = _manufacturer(exam)
            if not mine:
                runs.append(ExamRun(row, "not applicable", (f"{chosen.name} does not read this exam's modality",),
                                    manufacturer=maker))
                continue
            res = mine[0]
            runs.append(ExamRun(row, res.outcome, tuple(res.reasons), res, maker))
            log.info("%s: %s", row.key, res.outcome)
    finally:
        engine.clinical = saved
    return runs


def prediction_rows(runs: Iterable[ExamRun], label: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(evaluated, not evaluated) rows in the form :func:`mvi_node.evaluation.report.evaluate_predictions` reads."""
    done, failed = [], []
    for run in runs:
        base = {"exam": str(run.row.row), label: run.row.labels.get(label)}
        if run.evaluated:
            res = run.result
            done.append({**base, "probability": res.probability, "decision": bool(res.decision),
                         "roi_source": res.roi.get("source") or "", "outcome": res.outcome,
                         "max_diameter_mm": run.max_diameter_mm, "manufacturer": run.manufacturer,
                         "variant": res.prediction.variant})
        else:
            failed.append({**base, "outcome": run.outcome, "reasons": list(run.reasons)})
    return done, failed
