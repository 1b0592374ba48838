"""MR preprocessing benchmark: ``prepare_mr`` per step on one synthetic MR exam.

One exam of the MR phantom (256 x 256, Siemens profile: 67 slices of 3 mm per T1 phase)
is written to DICOM; the three sequences of seed 001 (T1 pre, portal venous,
transitional) are read header-only, as the node indexes them, and prepared onto the
portal venous grid. Two modes: ``auto`` (one frame of reference: the scanner geometry is
trusted, no registration, what a routine exam costs) and ``always`` (both other
sequences registered, what a split-study or re-positioned exam costs). Each figure is
the median of ``--reps`` runs after one warm-up; CPU is the process's user+system time
(all threads), steadier than wall time on a shared machine; shares are of CPU.

Usage: python bench/mr_preprocess.py [--reps 5] [--matrix 256] [--append bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROLES = ("mr_t1_pre", "mr_portal_venous", "mr_transitional")
REFERENCE = "mr_portal_venous"


def exam_series(root: Path, matrix: int) -> dict:
    import pydicom

    from mvi_node.synth.exam import write_exam
    from mvi_node.synth.spec import draw_spec

    entry = write_exam(draw_spec("mr", 1, 0, matrix=matrix, hard_cases="none", vendor="siemens",
                                 annotations="none"), root)
    series: dict = defaultdict(list)
    for path in sorted((root / "dicom").rglob("*")):
        if path.is_file():
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            role = entry["series"].get(str(ds.SeriesInstanceUID))
            if role in ROLES:
                series[role].append(ds)
    return dict(series)


def run(series: dict, mode: str, reps: int) -> dict:
    from mvi_node.preprocess.mr import STEPS, prepare_mr

    prepare_mr(series, REFERENCE, register=mode)  # warm-up: page cache, imports
    steps: dict[str, list[float]] = {s: [] for s in STEPS}
    cpu_steps: dict[str, list[float]] = {s: [] for s in STEPS}
    totals, cpus = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        vols = prepare_mr(series, REFERENCE, register=mode)
        totals.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        for s in STEPS:
            steps[s].append(vols.timings[s])
            cpu_steps[s].append(vols.cpu_seconds[s])
    return {"steps": {s: statistics.median(v) for s, v in steps.items()}, "total": statistics.median(totals),
            "cpu_steps": {s: statistics.median(v) for s, v in cpu_steps.items()},
            "cpu": statistics.median(cpus), "shape": list(vols.geometry.shape),
            "registration": {r: vols.registration[r].reason for r in ROLES if r != REFERENCE}}


def section(results: dict, reps: int, load: tuple[float, ...]) -> str:
    from mvi_node.preprocess.mr import STEPS

    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    shape = results["auto"]["shape"]
    lines = [
        "## MR preprocessing: prepare_mr on one synthetic MR exam (bench/mr_preprocess.py)", "",
        f"{when}; a shared 2-core CPU (x86_64, other engineers' jobs running: load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start), so read the shares, not the seconds. "
        f"Three sequences (T1 pre, portal venous, transitional; {shape[0]} x {shape[1]} x {shape[2]} each, "
        f"header-only datasets, pixels read from file) onto the portal venous grid; median of {reps} runs "
        "after one warm-up. `auto`: one frame of reference, geometry trusted, no registration; "
        "`always`: both other sequences registered (rigid, Mattes MI).", "",
        "| step | auto wall (s) | auto CPU (s) | auto CPU share | always wall (s) | always CPU (s) "
        "| always CPU share |", "|---|---|---|---|---|---|---|",
    ]
    au, al = results["auto"], results["always"]
    cpu_total = {m: sum(results[m]["cpu_steps"].values()) for m in results}
    for s in STEPS:
        lines.append(f"| {s} | {au['steps'][s]:.2f} | {au['cpu_steps'][s]:.2f} | "
                     f"{au['cpu_steps'][s] / cpu_total['auto']:.0%} | {al['steps'][s]:.2f} | "
                     f"{al['cpu_steps'][s]:.2f} | {al['cpu_steps'][s] / cpu_total['always']:.0%} |")
    lines += [f"| **total** | {au['total']:.2f} | {au['cpu']:.2f} | 100% | {al['total']:.2f} | {al['cpu']:.2f} "
              "| 100% |", ""]
    lines.append(f"N4 per sequence: {au['cpu_steps']['n4'] / 3:.2f} s CPU, {au['steps']['n4'] / 3:.2f} s wall. "
                 "Registration per sequence: "
                 f"{al['cpu_steps']['register'] / 2:.2f} s CPU, {al['steps']['register'] / 2:.2f} s wall. "
                 f"Registration results (always): {results['always']['registration']}.")
    lines += ["", "Command: `python bench/mr_preprocess.py --reps " f"{reps} --append bench/RESULTS.md`.", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--matrix", type=int, default=256)
    ap.add_argument("--append", type=Path, default=None)
    args = ap.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mr-bench-") as tmp:
        series = exam_series(Path(tmp), args.matrix)
        results = {mode: run(series, mode, args.reps) for mode in ("auto", "always")}
    text = section(results, args.reps, load)
    print(text)
    if args.append:
        with open(args.append, "a", encoding="utf-8") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
