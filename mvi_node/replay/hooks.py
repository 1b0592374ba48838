"""What a replay needs of the running node; ``mvi_node.app.replay`` implements it, so
this package never imports staging, the pipeline or the listener."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from mvi_node.select.recipes import RecipeNeeds
from mvi_node.select.rules import RuleSet


class NodeHooks(Protocol):
    """What the replay needs of the running node (``mvi_node.app`` implements it)."""

    calling_ae: str

    def needs(self) -> list[RecipeNeeds]: ...

    def rules(self) -> RuleSet: ...

    def models(self) -> dict[str, str]:
        """Served recipe -> model sha256."""

    def processed(self, study_uids: list[str]) -> dict[str, set[str]]:
        """Study -> ``recipe@sha256`` of the node's finished study jobs for it."""

    def staged(self, study_uid: str) -> dict[str, set[str]]:
        """Series -> SOP Instance UIDs the node has staged."""

    def staged_bytes(self, study_uid: str, series_uid: str) -> int:
        """Bytes the node has staged of one series."""

    def process(self, study_uid: str, since: float, tag: str, destination: str | None) -> str:
        """The key of the study job that will process what was retrieved since ``since``
        ('' while the study is still receiving)."""

    def job_outcome(self, key: str) -> tuple[str, dict[str, Any], str | None] | None:
        """(state, result, last error) of a job, None before it exists."""

    def pause_reason(self, needed_bytes: int = 0) -> str:
        """Why retrieval should wait now ('' when it need not): the node's free disk
        would fall below its floor with ``needed_bytes`` more."""

    def stage_file(self, path: Path, offset: int, transfer_syntax: str, sop_class: str, sop_uid: str,
                   source: str) -> int:
        """Stage one instance read from ``path`` (dataset from ``offset``); the DIMSE status."""

    def spool_dir(self) -> Path:
        """Where downloaded instances wait to be staged (the node's incoming folder)."""

    def accept(self, event) -> Any:
        """Stage one instance received by C-GET (the pynetdicom C-STORE event); the status."""
