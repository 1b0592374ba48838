"""Clinical factors as a schema each recipe declares, and the values found for one exam.

Recipes differ in what they use beside the images: seed 000 takes sex, age, maximum
tumour diameter, AFP, Child-Pugh class, HBsAg and HCV; the MRI and recurrence recipes
take others. A recipe declares its :class:`FactorSchema`; :class:`FactorValues` holds
what header, ROI and the site's clinical source said, and where each value came from.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterable, Literal

from pydicom.dataset import Dataset

FactorKind = Literal["number", "bool", "category"]


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "pos", "positive", "+"):
        return True
    if text in ("0", "false", "no", "n", "neg", "negative", "-"):
        return False
    return None


@dataclass(frozen=True)
class Factor:
    """One clinical factor: its name (the key in sources and cohort columns), its kind,
    unit and, for a category, the allowed values (first letter, case-insensitive)."""

    name: str
    kind: FactorKind
    description: str = ""
    unit: str = ""
    choices: tuple[str, ...] = ()

    def coerce(self, value: Any) -> Any:
        """The value in canonical form, or None when it is unknown or invalid."""
        if value is None:
            return None
        try:
            if self.kind == "number":
                if isinstance(value, bool):
                    return None
                return float(value) if str(value).strip() != "" else None
            if self.kind == "bool":
                return _bool(value)
            text = str(value).strip().upper()
            if self.choices and all(len(c) == 1 for c in self.choices):
                text = text[:1]
            return text if text in self.choices else None
        except (TypeError, ValueError):
            return None


class FactorSchema(tuple):
    """An ordered tuple of :class:`Factor`; names are unique."""

    def __new__(cls, factors: Iterable[Factor] = ()) -> "FactorSchema":
        items = tuple(factors)
        names = [f.name for f in items]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate clinical factor names in {names}")
        return super().__new__(cls, items)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self)

    def describe(self) -> list[dict[str, Any]]:
        """For manifests, ``/docs`` and the cohort check: name, kind, unit, choices."""
        return [{"name": f.name, "kind": f.kind, "unit": f.unit, "choices": list(f.choices),
                 "description": f.description} for f in self]

    def values(self) -> "FactorValues":
        return FactorValues(self)


class FactorValues:
    """Known values of a schema's factors for one exam (unknown: None) and their origin."""

    def __init__(self, schema: FactorSchema) -> None:
        self.schema = schema
        self._values: dict[str, Any] = {f.name: None for f in schema}
        self.origin: dict[str, str] = {}

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def get(self, name: str, default: Any = None) -> Any:
        value = self._values.get(name)
        return default if value is None else value

    def update(self, values: dict[str, Any] | None, origin: str) -> None:
        """Take the known, valid values of ``values`` (keys outside the schema ignored)."""
        for f in self.schema:
            value = f.coerce((values or {}).get(f.name))
            if value is not None:
                self._values[f.name] = value
                self.origin[f.name] = origin

    def missing(self) -> list[str]:
        return [name for name, value in self._values.items() if value is None]

    def complete(self) -> bool:
        return not self.missing()

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)


def _age(ds: Dataset) -> float | None:
    text = str(ds.get("PatientAge", "") or "").strip().upper()
    if len(text) == 4 and text[:3].isdigit():
        per = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}.get(text[3])
        if per:
            return int(text[:3]) * per
    birth, date = str(ds.get("PatientBirthDate", "") or ""), str(ds.get("StudyDate", "") or "")
    try:
        b, s = dt.datetime.strptime(birth, "%Y%m%d"), dt.datetime.strptime(date, "%Y%m%d")
    except ValueError:
        return None
    return (s - b).days / 365.25


def header_factors(ds: Dataset) -> dict[str, Any]:
    """Age (PatientAge, else StudyDate - PatientBirthDate) and sex (PatientSex M/F)."""
    return {"age": _age(ds), "sex": str(ds.get("PatientSex", "") or "") or None}
