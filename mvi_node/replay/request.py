"""A replay request: where from, which studies, and what to do with them.

Patient IDs and accession numbers may be part of a query; they are kept in the replay
store (the node holds the same data in its staging) but never shown: :meth:`public`
says only how many were given.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_DATE_RE = re.compile(r"^\d{8}$")


def parse_date(text: str) -> dt.date:
    """YYYYMMDD (DICOM DA) or YYYY-MM-DD."""
    text = text.strip().replace("-", "")
    if not _DATE_RE.match(text):
        raise ValueError("a date is YYYYMMDD or YYYY-MM-DD")
    return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: a configured archive name, or AE@HOST:PORT
    pacs: str | None = Field(default=None, max_length=200)
    folder: str | None = Field(default=None, max_length=4096)
    dicomweb: str | None = Field(default=None, max_length=2048)
    date_from: str | None = None
    date_to: str | None = None
    modality: list[Literal["CT", "MR"]] = Field(default_factory=list)
    accessions: list[str] = Field(default_factory=list, max_length=100000)
    patient_id: str | None = Field(default=None, max_length=64)
    #: regular expressions, searched case-insensitively
    study_description: str | None = Field(default=None, max_length=500)
    series_description: str | None = Field(default=None, max_length=500)
    limit: int | None = Field(default=None, ge=1)
    dry_run: bool = False
    force: bool = False
    #: results go here instead of the configured destinations (AE@HOST:PORT)
    destination: str | None = Field(default=None, max_length=200)
    requested_by: str = Field(default="", max_length=64)

    @field_validator("date_from", "date_to")
    @classmethod
    def _date(cls, value: str | None) -> str | None:
        return None if value is None else parse_date(value).strftime("%Y%m%d")

    @field_validator("study_description", "series_description")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc.msg}") from None
        return value

    @model_validator(mode="after")
    def _one_source(self) -> "ReplayRequest":
        given = [s for s in (self.pacs, self.folder, self.dicomweb) if s]
        if len(given) != 1:
            raise ValueError("exactly one source: pacs, folder or dicomweb")
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError("date_from is after date_to")
        return self

    @property
    def source_name(self) -> str:
        if self.pacs:
            return f"pacs:{self.pacs}"
        if self.folder:
            return "folder"
        return "dicomweb"

    def public(self) -> dict:
        """The query as it may be shown and logged: no identifier values."""
        out = self.model_dump(exclude={"accessions", "patient_id", "folder", "dicomweb"})
        out["source"] = self.source_name
        out["accessions"] = len(self.accessions)
        out["patient_id"] = "given" if self.patient_id else None
        return out
