"""A replay's progress as the API and the CLI's progress bar show it."""

from __future__ import annotations

import time
from typing import Any

from mvi_node.replay.store import ACTIVE, Replay, ReplayStore


def progress(store: ReplayStore, replay: Replay) -> dict[str, Any]:
    """Counts of a replay for the API and the CLI's progress bar: studies, series,
    instances (retrieved of expected), rate and ETA."""
    rows = store.studies(replay.id)
    series_total = sum(1 for r in rows if r.state != "skipped" for s in r.plan["series"] if s["retrieve"])
    inst_total = sum(s["instances"] or 0 for r in rows if r.state != "skipped" for s in r.plan["series"]
                     if s["retrieve"])
    finished = {"retrieved", "processing", "done"}
    series_done = sum(1 for r in rows if r.state in finished for s in r.plan["series"] if s["retrieve"])
    inst_done = sum(r.retrieved for r in rows)
    elapsed = max(1e-6, time.time() - (replay.started_at or time.time()))
    rate = inst_done / elapsed if replay.started_at else 0.0
    eta = (inst_total - inst_done) / rate if rate > 0 and replay.state in ACTIVE else None
    return {"studies": store.counts(replay.id), "studies_total": len(rows), "series_total": series_total,
            "series_retrieved": series_done, "instances_expected": inst_total, "instances_retrieved": inst_done,
            "instances_per_second": round(rate, 2), "eta_seconds": round(eta, 1) if eta is not None else None}
