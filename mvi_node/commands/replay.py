"""``mvi-node replay``: replay archived studies through the running node (issue 14).

``mvi-node replay --pacs NAME|AE@HOST:PORT --from DATE --to DATE [filters]`` submits the
replay to the node's admin API (``POST /replays``), found from the same configuration as
``serve`` (config file, ``MVI_`` variables, flags), then shows its progress until it is
done (``--detach`` returns at once). ``--dry-run`` changes nothing: it prints every study
found, the series that would be retrieved and why, instance counts and estimated bytes,
and writes that manifest as JSON. ``status [ID]``, ``cancel ID`` and ``schedules`` follow.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from pathlib import Path
from typing import Any

ACTIVE = ("queued", "querying", "running")


def _client(args):
    import httpx

    from mvi_node.commands.main import _settings_from

    settings = _settings_from(args)
    admin = settings.admin
    host = "127.0.0.1" if admin.host in ("0.0.0.0", "::", "") else admin.host
    scheme = "https" if admin.tls.enabled else "http"
    url = args.admin_url or f"{scheme}://{host}:{admin.port}"
    token = args.token or (admin.token.get_secret_value() if admin.token else None)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=30, verify=not admin.tls.enabled), settings


def _check(resp) -> Any:
    if resp.status_code >= 400:
        try:
            detail = resp.json().get("detail")
        except ValueError:
            detail = resp.text
        print(f"the node answered {resp.status_code}: {json.dumps(detail)}", file=sys.stderr)
        raise SystemExit(2)
    return resp.json()


def _request(args) -> dict[str, Any]:
    accessions = list(args.accession or [])
    if args.accessions_file:
        accessions += [line.strip() for line in Path(args.accessions_file).read_text().splitlines() if line.strip()]
    body = {"pacs": args.pacs, "folder": str(Path(args.folder).resolve()) if args.folder else None,
            "dicomweb": args.dicomweb, "date_from": args.date_from, "date_to": args.date_to,
            "modality": args.modality or [], "accessions": accessions, "patient_id": args.patient_id,
            "study_description": args.study_description, "series_description": args.series_description,
            "limit": args.limit, "dry_run": args.dry_run, "force": args.force, "destination": args.destination,
            "requested_by": getpass.getuser()}
    return {k: v for k, v in body.items() if v not in (None, [])}


def _bar(r: dict[str, Any], width: int = 24) -> str:
    p = r["progress"]
    st = p["studies"]
    total = max(1, p["studies_total"])
    finished = sum(st.get(s, 0) for s in ("done", "skipped", "failed", "cancelled"))
    fill = int(width * finished / total)
    eta = f"ETA {p['eta_seconds']:.0f} s" if p.get("eta_seconds") is not None else "ETA -"
    return (f"[{'#' * fill}{'.' * (width - fill)}] {r['state']}: studies {finished}/{p['studies_total']}"
            f" (done {st.get('done', 0)}, skipped {st.get('skipped', 0)}, failed {st.get('failed', 0)})"
            f" | series {p['series_retrieved']}/{p['series_total']}"
            f" | instances {p['instances_retrieved']}/{p['instances_expected']}"
            f" | {p['instances_per_second']:.1f}/s | {eta}" + (f" | paused: {r['paused']}" if r.get("paused") else ""))


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def print_manifest(d: dict[str, Any]) -> None:
    rows = [["study", "date", "mod", "state", "series to retrieve (role: why)", "inst", "est."]]
    for s in d["studies"]:
        wanted = [x for x in s["series"] or [] if x["retrieve"]]
        what = "; ".join(f"#{x['number']} {x['description']!r} ({x['role']}: {x['why']})" for x in wanted)
        rows.append([s["study_uid"], s["study_date"] or "", "/".join(s["modalities"] or []), s["state"],
                     what or s["reason"], str(sum(x["instances"] or 0 for x in wanted)),
                     _mb(sum(x["bytes"] for x in wanted))])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    t = d["totals"]
    print(f"{t['studies']} studies: {t['retrieve_studies']} to retrieve ({t['series']} series, {t['instances']}"
          f" instances, about {_mb(t['bytes'])}), {t['skipped']} skipped")


def _wait(client, rid: int, show: bool) -> dict[str, Any]:
    tty = sys.stderr.isatty()
    last = ""
    while True:
        r = _check(client.get(f"/replays/{rid}"))
        line = _bar(r)
        if show and line != last:
            print(("\r" if tty else "") + line, end="" if tty else "\n", file=sys.stderr, flush=True)
            last = line
        if r["state"] not in ACTIVE:
            if show and tty:
                print(file=sys.stderr)
            return r
        time.sleep(0.5)


def cmd_replay(args: argparse.Namespace) -> int:
    if not (args.pacs or args.folder or args.dicomweb):
        print("give a source: --pacs, --folder or --dicomweb (or a sub-command: status, cancel, schedules)",
              file=sys.stderr)
        return 2
    client, _ = _client(args)
    with client:
        r = _check(client.post("/replays", json=_request(args)))
        rid = r["id"]
        print(f"replay {rid} submitted", file=sys.stderr)
        if args.detach and not args.dry_run:
            print(json.dumps({"id": rid, "state": r["state"]}))
            return 0
        r = _wait(client, rid, show=not args.dry_run)
    if args.dry_run:
        manifest = Path(args.manifest or f"replay-{rid}-manifest.json")
        manifest.write_text(json.dumps(r, indent=2))
        print_manifest(r)
        print(f"manifest: {manifest}", file=sys.stderr)
    elif args.json:
        print(json.dumps(r, indent=2))
    else:
        for s in r["studies"]:
            print(f"{s['study_uid']}  {s['state']:<9} {s['reason']}")
    if r["state"] == "failed":
        print(f"replay failed: {r.get('error')}", file=sys.stderr)
        return 1
    return 1 if r["progress"]["studies"].get("failed") else 0


def cmd_status(args: argparse.Namespace) -> int:
    client, _ = _client(args)
    with client:
        if args.id is None:
            listed = _check(client.get("/replays"))
            if args.json:
                print(json.dumps(listed, indent=2))
            for r in listed if not args.json else []:
                print(f"{r['id']:>4}  {r['created_at']}  {r['query']['source']:<24} {_bar(r)}")
            return 0
        r = _check(client.get(f"/replays/{args.id}"))
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(_bar(r))
    for s in r["studies"]:
        print(f"  {s['study_uid']}  {s['state']:<9} {s['reason']}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    client, _ = _client(args)
    with client:
        r = _check(client.post(f"/replays/{args.id}/cancel"))
    print(f"replay {r['id']}: cancel requested ({r['state']})")
    return 0


def cmd_schedules(args: argparse.Namespace) -> int:
    from mvi_node.commands.main import _settings_from
    from mvi_node.replay.schedule import next_runs

    settings = _settings_from(args)
    rows = next_runs(settings.replay.schedules, settings.data_dir / "replay-schedules.sqlite3")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no [[replay.schedules]] configured")
    for r in rows:
        print(f"{r['name']:<20} {r['cron']:<16} {r['window']:<16} {','.join(r['modality']) or 'any':<8}"
              f" next {r['next_run']}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML configuration file (as for serve)")
    p.add_argument("--data-dir", help="data directory")
    p.add_argument("--admin-url", help="the node's admin API (default: from the configuration)")
    p.add_argument("--token", help="admin bearer token (default: admin.token)")
    p.add_argument("--json", action="store_true")


def register(subparsers) -> None:
    p = subparsers.add_parser("replay", help="replay archived studies (PACS, folder) through the running node",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    src = p.add_argument_group("source (one)")
    src.add_argument("--pacs", help="configured archive name ([replay.pacs.NAME]) or AE@HOST:PORT")
    src.add_argument("--folder", help="a folder of DICOM files (DICOMDIR or a plain tree)")
    src.add_argument("--dicomweb", help="QIDO-RS/WADO-RS base URL")
    f = p.add_argument_group("filters")
    f.add_argument("--from", dest="date_from", help="first StudyDate, YYYYMMDD or YYYY-MM-DD")
    f.add_argument("--to", dest="date_to", help="last StudyDate")
    f.add_argument("--modality", action="append", choices=["CT", "MR"])
    f.add_argument("--accession", action="append", help="an accession number (repeatable)")
    f.add_argument("--accessions-file", help="a file of accession numbers, one a line")
    f.add_argument("--patient-id")
    f.add_argument("--study-description", help="regular expression on StudyDescription")
    f.add_argument("--series-description", help="regular expression: only matching series are retrieved")
    f.add_argument("--limit", type=int, help="at most N studies")
    p.add_argument("--dry-run", action="store_true", help="plan only: the manifest and a summary, nothing moved")
    p.add_argument("--manifest", help="where the dry run's manifest goes (default replay-ID-manifest.json)")
    p.add_argument("--force", action="store_true", help="redo studies already processed with the same models")
    p.add_argument("--destination", metavar="AE@HOST:PORT", help="results go here instead (research)")
    p.add_argument("--detach", action="store_true", help="return once submitted")
    p.set_defaults(func=cmd_replay)
    sub = p.add_subparsers(dest="replay_command")
    s = sub.add_parser("status", help="progress of one replay, or the list")
    _common(s)
    s.add_argument("id", nargs="?", type=int)
    s.set_defaults(func=cmd_status)
    c = sub.add_parser("cancel", help="cancel a replay (C-CANCEL for moves in flight)")
    _common(c)
    c.add_argument("id", type=int)
    c.set_defaults(func=cmd_cancel)
    sc = sub.add_parser("schedules", help="configured schedules and their next run")
    _common(sc)
    sc.set_defaults(func=cmd_schedules)
