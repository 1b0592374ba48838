"""Deterministic UIDs of results (``2.25.`` + hash, PS3.5 B.2).

Derived from the source exam (StudyInstanceUID + sorted source series) and the model's
sha256, so a retried job or a replayed archive produces the same SR and SC UIDs and
PACS stores each result once; a new model gives new UIDs. A result whose content
changed (a late instance, an operator's retry) is version 2, 3 ...: new UIDs again, and
the pipeline supersedes the earlier version (PS3.3 C.17.2.3, IHE IOCM).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.uid import generate_uid

SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902


def derived_uid(*parts: str) -> str:
    return generate_uid(prefix="2.25.", entropy_srcs=["mvi-node", *map(str, parts)])


@dataclass(frozen=True)
class ResultUIDs:
    key: tuple[str, ...]

    @classmethod
    def of(cls, study_uid: str, source_series: Iterable[str], sha256: str, recipe: str = "",
           version: int = 1) -> "ResultUIDs":
        key = (str(study_uid), *sorted({str(s) for s in source_series}), recipe, sha256 or "no-model")
        return cls(key + ((f"v{version}",) if version > 1 else ()))


    @property
    def sr_series(self) -> str:
        return derived_uid("sr-series", *self.key)

    @property
    def sr(self) -> str:
        return derived_uid("sr", *self.key)

    @property
    def sc_series(self) -> str:
        return derived_uid("sc-series", *self.key)

    def sc(self, slice_key: str) -> str:
        """One capture per source slice (its SOP Instance UID or index)."""
        return derived_uid("sc", *self.key, str(slice_key))

    def tracking(self, tracking_id: str) -> str:
        return derived_uid("tracking", *self.key, tracking_id)
