"""The seven clinical factors of seed 000 and where each came from."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields
from typing import Any

from pydicom.dataset import Dataset

FACTORS: tuple[str, ...] = ("sex", "age", "mtd_mm", "afp_ng_ml", "child_pugh", "hbsag", "hcv")


@dataclass
class ClinicalFactors:
    """Values may be None (unknown); ``origin`` says per factor: header, roi or source."""

    sex: str | None = None  # "M" | "F"
    age: float | None = None  # years
    mtd_mm: float | None = None
    afp_ng_ml: float | None = None
    child_pugh: str | None = None  # "A" | "B" | "C"
    hbsag: bool | None = None
    hcv: bool | None = None
    origin: dict[str, str] = field(default_factory=dict)

    def missing(self) -> list[str]:
        return [name for name in FACTORS if getattr(self, name) is None]

    def complete(self) -> bool:
        return not self.missing()

    def update(self, values: dict[str, Any], origin: str) -> None:
        """Take the known, valid values of ``values`` (unknown keys ignored)."""
        for f in fields(self):
            if f.name in FACTORS and values.get(f.name) is not None:
                value = _coerce(f.name, values[f.name])
                if value is not None:
                    setattr(self, f.name, value)
                    self.origin[f.name] = origin

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FACTORS}


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "pos", "positive", "+"):
        return True
    if text in ("0", "false", "no", "n", "neg", "negative", "-"):
        return False
    return None


def _coerce(name: str, value: Any) -> Any:
    try:
        if name in ("age", "mtd_mm", "afp_ng_ml"):
            return float(value) if str(value).strip() != "" else None
        if name in ("hbsag", "hcv"):
            return _bool(value)
        if name == "sex":
            text = str(value).strip().upper()[:1]
            return text if text in ("M", "F") else None
        if name == "child_pugh":
            text = str(value).strip().upper()[:1]
            return text if text in ("A", "B", "C") else None
    except (TypeError, ValueError):
        return None
    return value


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
