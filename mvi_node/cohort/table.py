"""A cohort as rows: one exam each, its labels, its patient, its clinical values, its split.

Rows are numbered from 1 (the first row under a CSV's header). A problem found in a
row is a :class:`CohortError` naming the row, the column and the reason; messages never
quote patient identifiers or the folder paths a site wrote (which often hold them): the
row number is what the user looks up in their own table.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

#: columns with a meaning of their own; any other column is a clinical value
PATH = "path"
PATIENT_ID = "patient_id"
ACCESSION = "accession_number"
SPLIT = "split"

#: label columns and their values (canonical form)
LABELS: dict[str, tuple[Any, ...]] = {
    "mvi": (0, 1),
    "mvi_grade": ("M0", "M1", "M2"),
    "early_recurrence": (0, 1),
}
RESERVED = (PATH, PATIENT_ID, ACCESSION, SPLIT, *LABELS)

#: split column spellings -> the split
SPLIT_NAMES = {
    "train": "train", "training": "train",
    "validation": "validation", "val": "validation", "valid": "validation", "tune": "validation",
    "test": "test", "testing": "test", "holdout": "test",
}

_TRUE = ("1", "true", "yes", "y", "pos", "positive")
_FALSE = ("0", "false", "no", "n", "neg", "negative")


class CohortError(ValueError):
    """A problem with a cohort or one of its rows: ``row`` (0: the cohort as a whole),
    ``column`` ("" when none applies) and ``reason``."""

    def __init__(self, row: int, column: str, reason: str) -> None:
        self.row, self.column, self.reason = int(row), str(column), str(reason)
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row else "cohort"
        return f"{where}, column {self.column}: {self.reason}" if self.column else f"{where}: {self.reason}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CohortError) and (self.row, self.column, self.reason) == (
            other.row, other.column, other.reason)

    def __hash__(self) -> int:
        return hash((self.row, self.column, self.reason))

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "reason": self.reason}


def pseudonym(value: str, kind: str = "patient") -> str:
    """A stable short hash of an identifier (for grouping and naming, never the value)."""
    return hashlib.sha256(f"mvi-node/{kind}\0{value}".encode("utf-8")).hexdigest()[:16]


def parse_label(column: str, value: Any) -> Any:
    """The canonical value of label ``column`` (None when empty); ValueError names what
    was expected."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    allowed = LABELS[column]
    if allowed == (0, 1):
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, (int, float)) and value in (0, 1):
            return int(value)
        text = str(value).strip().lower()
        if text in _TRUE:
            return 1
        if text in _FALSE:
            return 0
        raise ValueError(f"unknown label value {str(value).strip()!r} (expected 0 or 1)")
    text = str(value).strip().upper()
    if text in allowed:
        return text
    raise ValueError(f"unknown label value {str(value).strip()!r} (expected {', '.join(map(str, allowed))})")


def parse_split(value: Any) -> str:
    """The split a ``split`` cell names ("" when empty); ValueError for anything else."""
    text = str(value or "").strip().lower()
    if not text:
        return ""
    if text in SPLIT_NAMES:
        return SPLIT_NAMES[text]
    raise ValueError(f"unknown split {str(value).strip()!r} (expected train, validation or test)")


@dataclass(frozen=True)
class CohortRow:
    """One exam of a cohort.

    ``labels``: the label columns present for this row, parsed (None: left empty).
    ``clinical``: every other non-empty column, as written (the recipe's factor schema
    coerces them). ``problems``: what was wrong in the row itself (missing folder, an
    unknown label or split value); a recipe only minds those of the columns it reads.
    ``patient_id`` and ``accession_number`` never appear in the repr.
    """

    row: int
    path: Path
    labels: Mapping[str, Any] = field(default_factory=dict)
    patient_id: str = field(default="", repr=False)
    accession_number: str = field(default="", repr=False)
    clinical: Mapping[str, Any] = field(default_factory=dict, repr=False)
    split: str = ""
    problems: tuple[CohortError, ...] = ()

    @property
    def key(self) -> str:
        """How logs and reports name the exam."""
        return f"row {self.row}"

    @property
    def patient_group(self) -> str:
        """Hash of the row's patient ID ("" when the cohort gives none)."""
        return pseudonym(self.patient_id) if self.patient_id else ""

    def problems_for(self, label: str | None = None) -> list[CohortError]:
        """Problems that make the row unusable for a recipe training on ``label``:
        anything about the folder or split, and about ``label`` (every label when None)."""
        return [p for p in self.problems
                if p.column not in LABELS or label is None or p.column == label]


@dataclass(frozen=True)
class Cohort:
    """Rows read from one source (:mod:`mvi_node.cohort.sources`).

    ``kind``: the source kind ("csv", "synth"); ``location``: the file or folder read;
    ``columns``: the columns it holds (for a synth folder the ones it implies);
    ``clinical``: a fallback clinical source for values the rows do not hold (the
    ``clinical/`` folder of a synth folder), or None.
    """

    kind: str
    location: Path
    rows: tuple[CohortRow, ...]
    columns: tuple[str, ...] = ()
    clinical: Any = None

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    @property
    def source(self) -> str:
        """"csv cohort.csv" / "synth train": what the model card says the data were."""
        return f"{self.kind} {self.location.name or self.location}"

    def has_column(self, name: str) -> bool:
        return name in self.columns

    def problems(self, label: str | None = None) -> list[CohortError]:
        """Every row's problems for a recipe training on ``label`` (see :meth:`CohortRow.problems_for`)."""
        return [p for r in self.rows for p in r.problems_for(label)]
