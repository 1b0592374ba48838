"""Where laboratory factors come from: one small interface, a file implementation.

A site points ``path`` at a JSON file (a list of records or a mapping key -> record), a
CSV file with a header row, or a directory of ``<key>.json`` files (the layout
``mvi-node synth`` writes under ``clinical/``). Records are matched by accession number
first, then patient ID. Errors never quote patient identifiers.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Protocol

KEY_FIELDS = ("accession_number", "patient_id")


class ClinicalSource(Protocol):
    """Anything that returns a record of factors for an exam (HL7, FHIR, a file)."""

    name: str

    def lookup(self, accession_number: str, patient_id: str) -> dict[str, Any] | None: ...


class NullClinicalSource:
    """No source configured: every lab factor is missing."""

    name = "none"

    def lookup(self, accession_number: str, patient_id: str) -> dict[str, Any] | None:
        return None


class FileClinicalSource:
    """JSON / CSV / directory of JSON; re-read when the file changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"file:{self.path.name}"
        self._stamp: float | None = None
        self._index: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            raise FileNotFoundError(f"clinical source {self.path} does not exist")

    def _records(self) -> list[dict[str, Any]]:
        if self.path.is_dir():
            return [json.loads(p.read_text(encoding="utf-8")) | {"_file": p.stem}
                    for p in sorted(self.path.glob("*.json"))]
        if self.path.suffix.lower() == ".csv":
            with self.path.open(newline="", encoding="utf-8") as fh:
                return [dict(row) for row in csv.DictReader(fh)]
        data = json.loads(self.path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            return [dict(v, _file=k) for k, v in data.items()]
        return list(data)

    def _load(self) -> None:
        stamp = self.path.stat().st_mtime
        if stamp == self._stamp:
            return
        index: dict[str, dict[str, Any]] = {}
        for rec in self._records():
            for key in (*KEY_FIELDS, "_file"):
                if rec.get(key):
                    index.setdefault(str(rec[key]).strip(), rec)
        self._index, self._stamp = index, stamp

    def lookup(self, accession_number: str, patient_id: str) -> dict[str, Any] | None:
        self._load()
        for key in (accession_number, patient_id):
            if key and str(key).strip() in self._index:
                return self._index[str(key).strip()]
        return None


def open_source(path: str | Path | None) -> ClinicalSource:
    """The configured source; ``None`` -> :class:`NullClinicalSource`."""
    return FileClinicalSource(path) if path else NullClinicalSource()


class ChainedClinicalSource:
    """Ask each source in turn; the first record found wins (a site file, then factors
    posted to the admin API, later HL7/FHIR)."""

    def __init__(self, sources: list[ClinicalSource]) -> None:
        self.sources = sources
        self.name = "+".join(s.name for s in sources) or "none"

    def lookup(self, accession_number: str, patient_id: str) -> dict[str, Any] | None:
        for source in self.sources:
            record = source.lookup(accession_number, patient_id)
            if record:
                return record
        return None
