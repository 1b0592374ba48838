"""A replay request: where from, which studies, and what to do with them.

Every rule a request must follow is in its JSON Schema (the admin API's OpenAPI
document), so a schema-valid request is never refused for its form: exactly one source
(``oneOf``), dates as DICOM DA or ISO dates, AE titles as ``AE@HOST:PORT``. A day past
the month's end means the month's last day; a description pattern that is not a valid
regular expression is matched as plain text. Whether a named archive or folder exists
is the node's answer (404), not the schema's.

Patient IDs and accession numbers may be part of a query; they are kept in the replay
store (the node holds the same data in its staging) but never shown: :meth:`public`
says only how many were given.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr, field_validator,
                      model_validator)

_DATE = r"^[1-9][0-9]{3}-?(0[1-9]|1[0-2])-?(0[1-9]|[12][0-9]|3[01])$"
_PORT = r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
#: AE@HOST:PORT, as [dispatch] destinations are written
AE_SPEC = rf"[A-Za-z0-9._\-][A-Za-z0-9 ._\-]{{0,15}}@[A-Za-z0-9.\-]{{1,253}}:{_PORT}"
#: a configured archive's name ([replay.pacs.NAME])
ARCHIVE_NAME = r"[A-Za-z0-9_.\-]{1,64}"

_Accession = Annotated[StrictStr, Field(min_length=1, max_length=16)]


def _not_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


#: JSON Schema's integer: 12.0 is one, true is not
_Count = Annotated[int, BeforeValidator(_not_bool)]


def parse_date(text: str) -> dt.date:
    """YYYYMMDD (DICOM DA) or YYYY-MM-DD; a day past the month's end is its last day."""
    text = text.strip().replace("-", "")
    if not re.fullmatch(r"\d{8}", text):
        raise ValueError("a date is YYYYMMDD or YYYY-MM-DD")
    year, month, day = int(text[:4]), int(text[4:6]), int(text[6:])
    if not (1 <= month <= 12 and day >= 1 and year >= 1):
        raise ValueError("a date is YYYYMMDD or YYYY-MM-DD")
    return dt.date(year, month, min(day, calendar.monthrange(year, month)[1]))


def pattern(text: str | None) -> re.Pattern | None:
    """A description pattern: a regular expression, or plain text when it is not one."""
    if not text:
        return None
    try:
        return re.compile(text, re.I)
    except re.error:
        return re.compile(re.escape(text), re.I)


def _printable(value):
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


class ReplayRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": ["pacs"]}, {"required": ["folder"]}, {"required": ["dicomweb"]}]},
    )

    #: a configured archive name, or AE@HOST:PORT
    pacs: StrictStr = Field(default=None, pattern=rf"^({ARCHIVE_NAME}|{AE_SPEC})$")  # type: ignore[assignment]
    #: a folder on the node, under one of ``[replay] folder_roots``
    folder: StrictStr = Field(default=None, min_length=1, max_length=4096)  # type: ignore[assignment]
    #: a DICOMweb base URL (QIDO-RS/WADO-RS)
    dicomweb: StrictStr = Field(default=None, pattern=r"^https?://[!-~]+$", max_length=2048)  # type: ignore[assignment]
    date_from: StrictStr = Field(default=None, pattern=_DATE)  # type: ignore[assignment]
    date_to: StrictStr = Field(default=None, pattern=_DATE)  # type: ignore[assignment]
    modality: list[Literal["CT", "MR"]] = Field(default_factory=list, max_length=2)
    accessions: list[_Accession] = Field(default_factory=list, max_length=10000)
    patient_id: StrictStr = Field(default=None, min_length=1, max_length=64)  # type: ignore[assignment]
    #: regular expressions, searched case-insensitively
    study_description: StrictStr = Field(default=None, min_length=1, max_length=500)  # type: ignore[assignment]
    series_description: StrictStr = Field(default=None, min_length=1, max_length=500)  # type: ignore[assignment]
    limit: _Count = Field(default=None, ge=1, le=1_000_000)  # type: ignore[assignment]
    dry_run: StrictBool = False
    force: StrictBool = False
    #: results go here instead of the configured destinations
    destination: StrictStr = Field(default=None, pattern=rf"^{AE_SPEC}$")  # type: ignore[assignment]
    requested_by: StrictStr = Field(default="", max_length=64)

    @field_validator("date_from", "date_to")
    @classmethod
    def _date(cls, value: str | None) -> str | None:
        return None if value is None else parse_date(value).strftime("%Y%m%d")

    @model_validator(mode="after")
    def _one_source(self) -> "ReplayRequest":
        given = [s for s in (self.pacs, self.folder, self.dicomweb) if s]
        if len(given) != 1:
            raise ValueError("exactly one source: pacs, folder or dicomweb")
        return self

    @property
    def source_name(self) -> str:
        if self.pacs:
            return f"pacs:{self.pacs}"
        if self.folder:
            return "folder"
        return "dicomweb"

    def public(self) -> dict:
        """The query as it may be shown and logged: no identifier values; text that
        UTF-8 cannot hold (a lone surrogate) shown escaped."""
        out = {k: _printable(v) for k, v in self.model_dump(exclude={"accessions", "patient_id", "folder",
                                                                     "dicomweb"}).items()}
        out["source"] = self.source_name
        out["accessions"] = len(self.accessions)
        out["patient_id"] = "given" if self.patient_id else None
        return out
