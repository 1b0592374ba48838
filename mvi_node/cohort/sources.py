"""Where cohorts come from: one small base class and a registry of source kinds.

- ``csv``: a CSV file, or a folder holding ``cohort.csv``; one row per exam with a
  ``path`` column (a folder of that exam's DICOM files, any layout; relative paths are
  relative to the CSV's folder), label columns (``mvi``, ``mvi_grade``,
  ``early_recurrence``), optional ``patient_id``, ``accession_number``, ``split`` and
  clinical-factor columns named as the recipe's factor schema. Column names are
  matched case-insensitively; comma, semicolon or tab separated; UTF-8 (a BOM is fine).
- ``synth``: a folder written by ``mvi-node synth`` (``manifest.json``, ``dicom/``,
  ``clinical/``): one row per manifest study, its labels from the manifest, its
  clinical values from ``clinical/``. One source among others: what the rows hold is
  exactly what a CSV over the same exams would hold.

A site adds a kind with :func:`register_source` (a subclass of :class:`CohortSource`).
"""

from __future__ import annotations

import csv
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from mvi_node.clinical import FileClinicalSource
from mvi_node.cohort.table import (ACCESSION, LABELS, PATH, PATIENT_ID, SPLIT, Cohort, CohortError, CohortRow,
                                   parse_label, parse_split)

COHORT_CSV = "cohort.csv"


class CohortSource(ABC):
    """A kind of cohort: whether it recognises a path, and how it reads one."""

    kind: ClassVar[str] = ""

    @abstractmethod
    def recognises(self, path: Path) -> bool:
        """Whether ``path`` is a cohort of this kind."""

    @abstractmethod
    def load(self, path: Path) -> Cohort:
        """The cohort at ``path``; :class:`CohortError` (row 0) when it cannot be read at all."""


#: kind -> source, tried in registration order by :func:`open_cohort`
SOURCES: dict[str, CohortSource] = {}


def register_source(source: type[CohortSource]) -> type[CohortSource]:
    """Class decorator: make a source kind known to :func:`open_cohort`."""
    if not source.kind:
        raise ValueError(f"{source.__name__} has no kind")
    SOURCES[source.kind] = source()
    return source


def _row(number: int, path: Path, values: dict[str, str], columns: set[str]) -> CohortRow:
    """A row from its cells (column -> text); problems recorded, never raised."""
    problems: list[CohortError] = []
    labels = {}
    for column in LABELS:
        if column in columns:
            try:
                labels[column] = parse_label(column, values.get(column))
            except ValueError as exc:
                labels[column] = None
                problems.append(CohortError(number, column, str(exc)))
    try:
        split = parse_split(values.get(SPLIT))
    except ValueError as exc:
        split = ""
        problems.append(CohortError(number, SPLIT, str(exc)))
    if not path.is_dir():
        problems.insert(0, CohortError(number, PATH, "folder not found" if not path.exists() else "not a folder"))
    clinical = {k: v for k, v in values.items()
                if k not in (PATH, PATIENT_ID, ACCESSION, SPLIT, *LABELS) and str(v or "").strip()}
    return CohortRow(number, path, labels, str(values.get(PATIENT_ID) or "").strip(),
                     str(values.get(ACCESSION) or "").strip(), clinical, split, tuple(problems))


@register_source
class CsvSource(CohortSource):
    """A CSV file, or a folder holding ``cohort.csv``."""

    kind = "csv"

    def _file(self, path: Path) -> Path:
        return path / COHORT_CSV if path.is_dir() else path

    def recognises(self, path: Path) -> bool:
        f = self._file(path)
        return f.is_file() and f.suffix.lower() == ".csv"

    def load(self, path: Path) -> Cohort:
        f = self._file(Path(path))
        text = f.read_text(encoding="utf-8-sig")
        lines = text.splitlines()
        if not lines or not lines[0].strip():
            raise CohortError(0, "", f"{f.name} is empty")
        delimiter = max(",;\t", key=lines[0].count)
        reader = csv.reader(lines, delimiter=delimiter)
        header = [h.strip().lower() for h in next(reader)]
        if PATH not in header:
            raise CohortError(0, PATH, f"{f.name} has no 'path' column (columns: {', '.join(header)})")
        dupes = sorted({h for h in header if h and header.count(h) > 1})
        if dupes:
            raise CohortError(0, dupes[0], f"column named more than once in {f.name}")
        columns = set(header)
        rows = []
        for number, cells in enumerate((c for c in reader if any(x.strip() for x in c)), start=1):
            values = {h: (cells[i].strip() if i < len(cells) else "") for i, h in enumerate(header) if h}
            written = values.get(PATH, "")
            if not written:
                rows.append(CohortRow(number, f.parent, {}, split="",
                                      problems=(CohortError(number, PATH, "empty"),)))
                continue
            folder = Path(written).expanduser()
            folder = folder if folder.is_absolute() else f.parent / folder
            rows.append(_row(number, folder, values, columns))
        clinical = f.parent / "clinical"
        return Cohort(self.kind, f, tuple(rows), tuple(h for h in header if h),
                      FileClinicalSource(clinical) if clinical.is_dir() else None)


@register_source
class SynthSource(CohortSource):
    """A folder written by ``mvi-node synth`` (``manifest.json`` from ``mvi_node.synth``)."""

    kind = "synth"

    def recognises(self, path: Path) -> bool:
        m = Path(path) / "manifest.json"
        if not m.is_file():
            return False
        try:
            return str(json.loads(m.read_text(encoding="utf-8")).get("generator", "")).startswith("mvi_node.synth")
        except (ValueError, OSError):
            return False

    def load(self, path: Path) -> Cohort:
        root = Path(path)
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        columns = {PATH, PATIENT_ID, ACCESSION, "mvi", "mvi_grade"}
        rows = []
        for number, study in enumerate(manifest.get("studies", []), start=1):
            values = {PATH: study.get("dicom_dir", ""), PATIENT_ID: study.get("patient_id", ""),
                      ACCESSION: study.get("accession_number", ""), "mvi": study.get("mvi"),
                      "mvi_grade": study.get("grade")}
            rows.append(_row(number, root / str(values[PATH]), values, columns))
        clinical = root / "clinical"
        return Cohort(self.kind, root, tuple(rows), (PATH, PATIENT_ID, ACCESSION, "mvi", "mvi_grade"),
                      FileClinicalSource(clinical) if clinical.is_dir() else None)


def open_cohort(path: Path | str, kind: str | None = None) -> Cohort:
    """The cohort at ``path``: the first registered kind that recognises it, or ``kind``."""
    path = Path(path)
    if kind:
        if kind not in SOURCES:
            raise CohortError(0, "", f"unknown cohort kind {kind!r}; known: {', '.join(SOURCES)}")
        return SOURCES[kind].load(path)
    if not path.exists():
        raise CohortError(0, "", f"{path} does not exist")
    for source in SOURCES.values():
        if source.recognises(path):
            return source.load(path)
    raise CohortError(0, "", f"{path} is not a cohort: give a CSV file, a folder holding {COHORT_CSV}, "
                             "or a folder written by `mvi-node synth` (manifest.json)")
