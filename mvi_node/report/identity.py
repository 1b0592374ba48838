"""Who made a result, and the deterministic UIDs of what it made.

UIDs are derived (``2.25.`` from a hash, PS3.5 §B.2) from the source exam and the
model's sha256: a retried job, a replayed archive or a second node produce the same SR
and SC UIDs, so PACS stores each result once.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import generate_uid

from mvi_node import __version__

MANUFACTURER = "mvi-node project"
#: private coding scheme for concepts the standard has no code for (declared in the SR)
SCHEME = "99MVINODE"
SCHEME_NAME = "mvi-node private concepts"


@dataclass(frozen=True)
class ModelIdentity:
    recipe: str
    version: str
    variant: str
    sha256: str
    intended_use: str
    training_data: str

    @classmethod
    def from_result(cls, model: dict) -> "ModelIdentity":
        return cls(
            recipe=str(model.get("recipe", "")),
            version=str(model.get("model_version", "")),
            variant=str(model.get("variant", "")),
            sha256=str(model.get("sha256", "")),
            intended_use=str(model.get("intended_use", "")),
            training_data=str(model.get("training_data", "")),
        )

    @property
    def synthetic(self) -> bool:
        return "synthetic" in self.training_data.lower()

    @property
    def device_uid(self) -> str:
        """Changes with the model: a new sha256 is a new algorithm device."""
        return derived_uid("device", self.recipe, self.sha256)

    @property
    def software_versions(self) -> list[str]:
        return [f"mvi-node {__version__}", f"{self.recipe} {self.version} ({self.variant})"]

    @property
    def label(self) -> str:
        return f"{self.recipe} {self.version}"


def derived_uid(*parts: str) -> str:
    return generate_uid(prefix="2.25.", entropy_srcs=["mvi-node", *parts])


def result_uids(study_uid: str, source_series: list[str], recipe: str, sha256: str) -> dict[str, str]:
    """Series and instance UIDs of one result set (SR + SCs) for one exam x model."""
    key = [study_uid, *sorted(source_series), recipe, sha256 or "no-model"]
    return {
        "sr_series": derived_uid("sr-series", *key),
        "sr": derived_uid("sr", *key),
        "sc_series": derived_uid("sc-series", *key),
        "sc_prefix": "|".join(key),
    }


def sc_uid(prefix: str, index: int) -> str:
    return derived_uid("sc", prefix, str(index))
