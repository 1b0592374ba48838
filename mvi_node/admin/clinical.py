"""Clinical factors posted over the admin API, filed per exam until HL7/FHIR lands.

Files are named by a hash of the key, so a patient ID never becomes a path (nor a
traversal); each holds the JSON the clinical-factor source reads.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr, model_validator

from mvi_node.common.durable import write_durably


def _not_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


_Number = Annotated[float, BeforeValidator(_not_bool)]
_Count = Annotated[int, BeforeValidator(_not_bool)]


class ClinicalFactorsIn(BaseModel):
    """Seed 000's clinical factors that are not in the DICOM header.

    Omit a factor that is unknown (no nulls): the model then runs its image-only variant.
    A boolean is never a number here, and a string never a boolean (JSON Schema's
    reading: ``13.0`` is a valid integer, ``true`` is not).
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"anyOf": [{"required": ["accession_number"]}, {"required": ["patient_id"]}]},
    )

    accession_number: StrictStr = Field(default=None, min_length=1, max_length=16)  # type: ignore[assignment]
    patient_id: StrictStr = Field(default=None, min_length=1, max_length=64)  # type: ignore[assignment]
    afp_ng_ml: _Number = Field(default=None, ge=0, le=1e7, description="alpha-fetoprotein, ng/mL")  # type: ignore[assignment]
    child_pugh: Literal["A", "B", "C"] = None  # type: ignore[assignment]
    hbsag: StrictBool = Field(default=None, description="hepatitis B surface antigen positive")  # type: ignore[assignment]
    hcv: StrictBool = Field(default=None, description="hepatitis C antibody positive")  # type: ignore[assignment]
    tumour_count: _Count = Field(default=None, ge=0, le=50)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _keyed(self) -> "ClinicalFactorsIn":
        if not (self.accession_number or self.patient_id):
            raise ValueError("accession_number or patient_id is required")
        return self

    @property
    def key(self) -> str:
        return self.accession_number or self.patient_id  # type: ignore[return-value]


def key_file(directory: Path, key: str) -> Path:
    return Path(directory) / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


class ClinicalFactorStore:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def put(self, factors: ClinicalFactorsIn) -> str:
        data = factors.model_dump(exclude_none=True)
        write_durably(key_file(self.directory, factors.key), json.dumps(data, sort_keys=True).encode())
        return factors.key

    def get(self, key: str) -> dict | None:
        path = key_file(self.directory, key)
        return json.loads(path.read_text()) if path.exists() else None
