"""Cohort rows through the serving path: exactly what the engine does to a routed exam.

For each row: the exam in its folder (:func:`mvi_node.select.engine.select_path`, the
node's own header selection), the winning series (``Exam.winners``), the recipe's
``qualifies``, then :meth:`Recipe.prepare` with the :class:`ExamInputs` the engine
builds, whose clinical source serves the row's clinical columns (then the cohort's
fallback, e.g. a synth folder's ``clinical/``). The ROI therefore comes from the
exam's own annotations (SEG, RTSTRUCT, SR, GSPS), never from a truth mask.

- :func:`iter_exams`: (row, selected exam or the problem) per row, for evaluation
  (which runs the engine itself on each exam);
- :func:`prepare_rows`: a :class:`RowOutcome` per row (exam found, series selected,
  ROI source, label, the :class:`TrainingExample` or the named problems);
- :func:`build_examples`: every usable row as a :class:`TrainingExample`, split by
  patient (:mod:`mvi_node.cohort.split`), and the cohort's description for the model card.

Rows are named by number, patients by a hash: nothing here logs an identifier.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Mapping

from mvi_node.cohort.split import assign_splits, split_counts
from mvi_node.cohort.table import LABELS, PATH, Cohort, CohortError, CohortRow, pseudonym
from mvi_node.infer.recipe import NO_ROI, ExamInputs, NotEvaluated, Recipe, TrainingExample
from mvi_node.select.engine import Exam, select_path
from mvi_node.select.rules import RuleSet

log = logging.getLogger(__name__)

NO_SERIES_WHY = "no eligible series"


class RowClinicalSource:
    """A :class:`~mvi_node.clinical.ClinicalSource` for one row: its clinical columns,
    over what the cohort's fallback source holds for the row's exam."""

    name = "cohort"

    def __init__(self, row: CohortRow, fallback: Any = None) -> None:
        self.row, self.fallback = row, fallback

    def lookup(self, accession_number: str, patient_id: str) -> dict[str, Any] | None:
        record: dict[str, Any] = {}
        if self.fallback is not None:
            record.update(self.fallback.lookup(self.row.accession_number or accession_number,
                                               self.row.patient_id or patient_id) or {})
        record.update(self.row.clinical)
        return record or None


def exam_inputs(recipe: Recipe, exam: Exam, winners: Mapping[str, Any], clinical: Any) -> ExamInputs:
    """The :class:`ExamInputs` the engine gives ``recipe`` for ``exam`` (same fields, same order)."""
    return ExamInputs(
        series={role: tuple(winners[role].datasets) for role in recipe.requires},
        exam=tuple(ds for u in exam.units for ds in u.datasets), clinical=clinical,
        patient_id=exam.patient_id, study_uids=tuple(exam.study_uids),
    )


def _label_problem(cohort: Cohort, row: CohortRow, label: str) -> CohortError | None:
    if not cohort.has_column(label):
        return CohortError(row.row, label, "column missing from the cohort")
    if row.labels.get(label) is None and not any(p.column == label for p in row.problems):
        return CohortError(row.row, label, "empty")
    return None


def _pick(row: CohortRow, exams: list[Exam], recipe: Recipe | None) -> Exam | CohortError:
    if not exams:
        return CohortError(row.row, PATH, "no DICOM files in the folder")
    if len(exams) > 1 and row.accession_number:
        same = [e for e in exams if e.accession_number == row.accession_number]
        exams = same or exams
    if len(exams) > 1 and recipe is not None:
        readable = [e for e in exams if recipe.modalities & e.modalities]
        exams = readable or exams
        if len(exams) > 1:
            fit = [e for e in exams if recipe.qualifies(e.winners())[0]]
            exams = fit or exams
    if len(exams) > 1:
        return CohortError(row.row, PATH, f"the folder holds {len(exams)} exams; "
                                          "an accession_number column says which one the row means")
    return exams[0]


def _row_problems(cohort: Cohort, row: CohortRow, recipe: Recipe | None) -> list[CohortError]:
    label = recipe.endpoint.label if recipe is not None else None
    problems = row.problems_for(label)
    missing = _label_problem(cohort, row, label) if label else None
    return problems + ([missing] if missing else [])


def iter_exams(cohort: Cohort, recipe: Recipe | None = None,
               rules: RuleSet | None = None) -> Iterator[tuple[CohortRow, Exam | CohortError]]:
    """(row, its selected exam) per row, in row order; instead of the exam, the row's
    first problem (missing folder, no DICOM, several exams, and with ``recipe`` its
    label column missing, empty or unknown). Selection only: run the engine (or
    :func:`prepare_rows`) for the rest."""
    for row in cohort:
        problems = _row_problems(cohort, row, recipe)
        if problems:
            yield row, problems[0]
            continue
        yield row, _pick(row, select_path(row.path, rules), recipe)


@dataclass(frozen=True)
class RowOutcome:
    """One row through the serving path: what was found and whether a recipe can train on it."""

    row: CohortRow
    exam_found: bool = False
    series_uid: str = ""
    series: str = ""  # "S3 ART 5mm": SeriesNumber and SeriesDescription of the winner
    roi_source: str = ""
    label: Any = None
    manufacturer: str = ""
    example: TrainingExample | None = None
    problems: tuple[CohortError, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def usable(self) -> bool:
        return self.example is not None and not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row.row, "exam_found": self.exam_found, "series_instance_uid": self.series_uid or None,
                "series": self.series or None, "roi_source": self.roi_source or None, "label": self.label,
                "split": self.example.split if self.example else (self.row.split or None),
                "manufacturer": self.manufacturer or None, "usable": self.usable,
                "problems": [p.as_dict() for p in self.problems], "warnings": list(self.warnings)}


def _roi_source(prepared: Any) -> str:
    roi = getattr(prepared, "roi", None)
    if roi is None and isinstance(prepared, Mapping):
        roi = prepared.get("roi")
    if isinstance(roi, Mapping):
        return str(roi.get("source", "") or "")
    return str(getattr(roi, "source", "") or "")


def _factors(prepared: Any) -> Any:
    f = getattr(prepared, "factors", None)
    return f if hasattr(f, "missing") and hasattr(f, "get") else None


def _clinical_warnings(recipe: Recipe, row: CohortRow, prepared: Any) -> list[str]:
    out = []
    for factor in recipe.factors:
        if factor.name in row.clinical and factor.coerce(row.clinical[factor.name]) is None:
            want = ", ".join(factor.choices) if factor.choices else {"number": "a number", "bool": "0/1"}.get(
                factor.kind, factor.kind)
            out.append(f"column {factor.name}: value not understood (expected {want})")
    f = _factors(prepared)
    if f is not None and f.missing():
        out.append("clinical factors missing: " + ", ".join(f.missing()))
    return out


def _series_name(unit: Any) -> str:
    ds = unit.ds
    number = ds.get("SeriesNumber", "")
    desc = str(ds.get("SeriesDescription", "") or "").strip()
    return " ".join(x for x in (f"S{number}" if number not in ("", None) else "", desc[:32]) if x)


def prepare_row(cohort: Cohort, row: CohortRow, recipe: Recipe, rules: RuleSet | None = None,
                keep: Callable[[Any], Any] | None = None) -> RowOutcome:
    """One row through selection, ``qualifies`` and ``prepare`` (see the module doc).
    ``keep(prepared)`` is what the example holds (default: the prepared object)."""
    label_name = recipe.endpoint.label
    label = row.labels.get(label_name) if label_name else None
    problems = _row_problems(cohort, row, recipe)
    if any(p.column == PATH for p in problems):
        return RowOutcome(row, label=label, problems=tuple(problems))
    exam = _pick(row, select_path(row.path, rules), recipe)
    if isinstance(exam, CohortError):
        return RowOutcome(row, label=label, problems=tuple([exam, *problems]))
    base: dict[str, Any] = dict(row=row, exam_found=True, label=label)
    if not recipe.modalities & exam.modalities:
        shown = "/".join(sorted(m for m in exam.modalities if m)) or "none"
        why = f"{NO_SERIES_WHY}: the exam is {shown}, the recipe reads {'/'.join(sorted(recipe.modalities))}"
        return RowOutcome(**base, problems=(CohortError(row.row, PATH, why), *problems))
    winners = exam.winners()
    ok, why = recipe.qualifies(winners)
    if not ok:
        unknown = [u.uid for u in exam.units if u.features.get("timing_phase") == "unknown"]
        if unknown:
            why += f"; contrast timing undetermined for {len(unknown)} series"
        return RowOutcome(**base, problems=(CohortError(row.row, PATH, f"{NO_SERIES_WHY}: {why}"), *problems))
    unit = winners[recipe.requires[0]]
    manufacturer = str(unit.ds.get("Manufacturer", "") or "").strip()
    base.update(series_uid=str(unit.series_uid), series=_series_name(unit), manufacturer=manufacturer)
    clinical = RowClinicalSource(row, cohort.clinical)
    try:
        prepared = recipe.prepare(exam_inputs(recipe, exam, winners, clinical))
    except Exception as exc:  # noqa: BLE001 - one bad exam is a named problem, not the end of training
        log.debug("%s: prepare failed", row.key, exc_info=True)
        return RowOutcome(**base, problems=(CohortError(row.row, PATH, f"prepare failed ({type(exc).__name__})"),
                                            *problems))
    if isinstance(prepared, NotEvaluated):
        head = "no ROI" if prepared.outcome == NO_ROI else prepared.outcome
        detail = "; ".join(prepared.reasons)
        return RowOutcome(**base, problems=(CohortError(row.row, PATH, f"{head}: {detail}" if detail else head),
                                            *problems))
    base["roi_source"] = _roi_source(prepared)
    warnings = tuple(_clinical_warnings(recipe, row, prepared))
    if problems:
        return RowOutcome(**base, problems=tuple(problems), warnings=warnings)
    f = _factors(prepared)
    attributes: dict[str, Any] = {"manufacturer": manufacturer}
    mtd = f.get("mtd_mm") if f is not None else None
    if mtd is not None:
        attributes["max_diameter_mm"] = round(float(mtd), 1)
    group = row.patient_group or (pseudonym(exam.patient_id) if exam.patient_id else
                                  pseudonym(f"{cohort.location}#{row.row}", "row"))
    labels = {k: v for k, v in row.labels.items() if k in LABELS and v is not None}
    example = TrainingExample(key=row.key, group=group, labels=labels, split=row.split,
                              prepared=keep(prepared) if keep else prepared, attributes=attributes, row=row.row)
    return RowOutcome(**base, example=example, warnings=warnings)


def prepare_rows(cohort: Cohort, recipe: Recipe, rules: RuleSet | None = None,
                 keep: Callable[[Any], Any] | None = None) -> Iterator[RowOutcome]:
    """:func:`prepare_row` for every row, in order."""
    for row in cohort:
        yield prepare_row(cohort, row, recipe, rules, keep)


def problem_kind(problem: CohortError) -> str:
    """The reason's head, for counts: "no ROI", "folder not found", "mvi: unknown label value"."""
    head = re.split(r":| \(| '", problem.reason, maxsplit=1)[0].strip()
    return f"{problem.column}: {head}" if problem.column and problem.column != PATH else head


def describe(cohort: Cohort, outcomes: Any, label: str, examples: Any = None) -> dict[str, Any]:
    """Source, rows, usable rows, patients, label prevalence (or classes), manufacturers,
    splits and why rows were left out: counts only, TOML-safe (no None)."""
    outcomes = list(outcomes)
    usable = [o for o in outcomes if o.usable]
    examples = list(examples) if examples is not None else [o.example for o in usable]
    out: dict[str, Any] = {"source": cohort.source, "kind": cohort.kind, "location": str(cohort.location),
                           "rows": len(cohort), "usable_rows": len(usable), "label": label,
                           "patients": len({e.group for e in examples})}
    values = [e.labels.get(label) for e in examples if e.labels.get(label) is not None]
    if values and set(LABELS.get(label, ())) <= {0, 1}:
        out["positives"] = int(sum(values))
        out["prevalence"] = round(sum(values) / len(values), 4)
    elif values:
        out["classes"] = dict(sorted(Counter(str(v) for v in values).items()))
    out["manufacturers"] = dict(Counter(str(e.attributes.get("manufacturer") or "unknown") for e in examples)
                                .most_common())
    if any(e.split for e in examples):
        out["splits"] = split_counts(examples)
    left_out = Counter(problem_kind(o.problems[0]) for o in outcomes if o.problems)
    if left_out:
        out["left_out"] = dict(left_out.most_common())
    return out


@dataclass(frozen=True)
class CohortExamples:
    """A cohort made ready for a recipe: its usable rows as split examples, every row's
    outcome, and the description the model card prints."""

    cohort: Cohort
    label: str
    examples: tuple[TrainingExample, ...]
    outcomes: tuple[RowOutcome, ...]

    @property
    def problems(self) -> list[CohortError]:
        return [p for o in self.outcomes for p in o.problems]

    def describe(self) -> dict[str, Any]:
        return describe(self.cohort, self.outcomes, self.label, self.examples)


def build_examples(cohort: Cohort, recipe: Recipe, *, seed: int = 0, validation: float = 0.2, test: float = 0.0,
                   rules: RuleSet | None = None, keep: Callable[[Any], Any] | None = None,
                   progress: Callable[[RowOutcome], None] | None = None, split: bool = True) -> CohortExamples:
    """Every row through :func:`prepare_row`; the usable ones split by patient
    (:func:`mvi_node.cohort.split.assign_splits`: the ``split`` column wins, the rest
    seeded and stratified by label). ``progress(outcome)`` after each row.
    ``split=False`` leaves the examples' splits as the cohort gives them."""
    outcomes = []
    for outcome in prepare_rows(cohort, recipe, rules, keep):
        outcomes.append(outcome)
        if outcome.problems:
            log.info("%s left out: %s", outcome.row.key, outcome.problems[0])
        if progress is not None:
            progress(outcome)
    examples = [o.example for o in outcomes if o.usable]
    if split:
        examples = assign_splits(examples, seed=seed, validation=validation, test=test, label=recipe.endpoint.label)
    by_row = {e.row: e for e in examples}
    outcomes = [replace(o, example=by_row[o.row.row]) if o.usable else o for o in outcomes]
    return CohortExamples(cohort, recipe.endpoint.label, tuple(examples), tuple(outcomes))
