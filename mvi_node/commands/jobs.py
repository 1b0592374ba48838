"""``mvi-node jobs [--state S] [--study UID] [--kind K] [--json]``: the job list as a table.

The same view as ``GET /jobs`` (ISO 8601 UTC times, per study job each recipe's outcome,
probability, the SR and which result superseded which), read from the job store.
"""

from __future__ import annotations

import argparse
import json


def _row(s) -> list[str]:
    results = "; ".join(
        f"{r.recipe}: {r.outcome}" + (f" p={r.probability:.3f}" if r.probability is not None else "")
        + (f" v{r.version}" if r.version and r.version > 1 else "")
        + (f" (superseded by {r.superseded_by})" if r.superseded_by else "")
        for r in s.results)
    return [str(s.id), s.kind, s.state.value, f"{s.attempts}/{s.max_attempts}", s.updated_at, s.study_uid or "",
            results or (s.last_error or "")[:80]]


def cmd_jobs(args: argparse.Namespace) -> int:
    from mvi_node.admin.app import filtered, summaries
    from mvi_node.commands.main import _settings_from
    from mvi_node.jobs import JobState, open_job_store

    settings = _settings_from(args)
    store = open_job_store(settings.jobs.backend, settings.jobs_db)
    listed = summaries(filtered(store, JobState(args.state) if args.state else None, args.study, args.kind, args.limit))
    if args.json:
        print(json.dumps([s.model_dump(mode="json") for s in listed], indent=2))
        return 0
    rows = [["id", "kind", "state", "tries", "updated (UTC)", "study", "results / last error"], *map(_row, listed)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("jobs", help="jobs, newest first: state, study, each recipe's outcome and probability")
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--data-dir", help="data directory (staging, index, jobs)")
    p.add_argument("--state", choices=["queued", "running", "done", "failed", "dead"])
    p.add_argument("--study", help="StudyInstanceUID")
    p.add_argument("--kind", help="job kind (study, dispatch, orthanc-import, ...)")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_jobs)
