"""Where finished result sets go: one base class, one registry, one module per kind.

The study pipeline hands every result set (files already written durably) to each
configured sink; a sink turns it into durable jobs of its own kind (C-STORE to a
destination, a store through Orthanc). Kinds register themselves by name, as mercure's
dispatch targets do, so the composition root builds sinks from configuration without
knowing their classes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from mvi_node.jobs.store import Job


@dataclass(frozen=True)
class ResultSet:
    """One exam x recipe's result files (SR first) and the keys that make queueing idempotent."""

    files: tuple[Path, ...]
    #: deterministic SOP Instance UID of the SR: the same result queued twice is sent once
    key: str
    study_uid: str
    #: when the source study was complete (epoch seconds), for the end-to-end latency metric
    completed_at: float | None = None


class ResultSink(ABC):
    """Queues a result set for delivery; returns the jobs it queued (possibly none)."""

    kind: ClassVar[str] = ""

    @abstractmethod
    def queue(self, result: ResultSet) -> list[Job]:
        """Queue durable delivery jobs for ``result``; must be idempotent per ``result.key``."""


SINK_KINDS: dict[str, type[ResultSink]] = {}


def register_sink(cls: type[ResultSink]) -> type[ResultSink]:
    """Class decorator: make a sink kind known by its ``kind`` name."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__}: a result sink needs a non-empty kind")
    SINK_KINDS[cls.kind] = cls
    return cls
