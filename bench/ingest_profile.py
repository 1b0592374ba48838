"""Where the node's CPU goes while DCMTK storescu sends, and whether one GIL serialises it.

For 1 and 4 parallel associations (300 CT slices 512x512 each, as bench/ingest.py):
  - CPU seconds of the node's processes per instance (/proc/<pid>/stat), and of the senders;
  - py-spy samples of the node (threads py-spy sees as active: running Python, or in a
    call such as fsync or select) grouped by the code the sampled frame is in (the
    innermost frame that matches a group); the same for the samples holding the GIL;
  - py-spy with --gil: the share of wall time some thread holds the GIL. Near 100 % the
    process is serialised by it and only more processes can go faster.

Usage: python bench/ingest_profile.py [--workers 1] [--json bench/out/ingest_profile.json]
(py-spy: the bench extra, ``pip install -e .[bench]``; it attaches with ptrace, so root or
CAP_SYS_PTRACE.)
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import SLICES, mvi_node, send  # noqa: E402
from mvi_node.synth.plain_series import plain_ct_series  # noqa: E402

PY_SPY = str(Path(sys.executable).with_name("py-spy"))
RATE = 250  # samples a second

#: (group, path fragments of a frame's file); the innermost matching frame decides
GROUPS = [
    ("waiting: select, queues, conditions", ("NodeSocket.ready", "Condition.wait", "select (selectors.py)",
                                             "AssociationSocket.ready", "Event.wait")),
    ("node: staging the file (fsync, rename)", ("mvi_node/common/durable.py",)),
    ("node: header walk", ("mvi_node/stage/dataset_check.py",)),
    ("node: SQLite index", ("mvi_node/stage/index.py", "mvi_node/common/sqlite.py")),
    ("node: receive to file", ("mvi_node/receive/incoming.py",)),
    ("node: handler, file meta, checks", ("mvi_node/receive/", "mvi_node/stage/", "mvi_node/logs.py")),
    ("pydicom (command and status sets)", ("pydicom/",)),
    ("pynetdicom: PDU decode/encode", ("pynetdicom/pdu.py", "pynetdicom/pdu_items.py", "pynetdicom/pdu_primitives.py")),
    ("pynetdicom: DIMSE messages", ("pynetdicom/dimse",)),
    ("pynetdicom: DUL state machine", ("pynetdicom/dul.py", "pynetdicom/fsm.py", "pynetdicom/timer.py")),
    ("pynetdicom: socket reads/writes", ("pynetdicom/transport.py", "socket.py", "selectors.py", "ssl.py")),
    ("pynetdicom: association, events, service", ("pynetdicom/",)),
    ("threads, queues, locks", ("threading.py", "queue.py")),
]


#: work of other threads of the node's process, named by a frame anywhere in the stack
OUTER = [("header prefetch (pipeline/prefetch.py)", "mvi_node/pipeline/prefetch.py"),
         ("study jobs (pipeline/)", "mvi_node/pipeline/")]


def _group(stack: list[str]) -> str:
    for name, part in OUTER:
        if any(part in frame for frame in stack):
            return name
    for frame in reversed(stack):  # innermost last in py-spy's raw format
        for name, parts in GROUPS:
            if any(p in frame for p in parts):
                return name
    return "other"


def _leaf(stack: list[str]) -> str:
    return stack[-1] if stack else "?"


def read_raw(path: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw (collapsed) output: ``frame;frame;... count`` per line."""
    out = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            out.append((stack.split(";"), int(count)))
    return out


def _tree(pid: int) -> list[int]:
    pids = [pid]
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return pids
    for kid in kids:
        pids += _tree(int(kid))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def _spy(pid: int, out: Path, gil: bool) -> subprocess.Popen:
    cmd = [PY_SPY, "record", "-p", str(pid), "-r", str(RATE), "-f", "raw", "--nolineno", "-o", str(out)]
    if gil:
        cmd.append("--gil")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # attached
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def profile(folders: list[Path], root: Path, workers: int, assocs: int) -> dict:
    work = root / f"profile-{assocs}"
    work.mkdir()
    with mvi_node(work, workers) as srv:
        pids = _tree(srv.proc.pid)
        # pass 1: CPU per instance, no profiler attached
        before, kids_before = cpu_seconds(pids), resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        rate = send(srv.port, folders[:assocs], "MVI_NODE")
        wall = time.perf_counter() - t0
        node_cpu = cpu_seconds(pids) - before
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        sender_cpu = (kids.ru_utime + kids.ru_stime) - (kids_before.ru_utime + kids_before.ru_stime)
        n = SLICES * assocs
        samples = {}
        for gil in (False, True):
            # a resend: the same instances again, acknowledged as duplicates without a
            # rewrite, would profile another path; a fresh copy of the series is sent
            out = work / f"spy-{'gil' if gil else 'cpu'}.txt"
            fresh = [_fresh_copy(f, work / f"copy-{gil}-{i}", i) for i, f in enumerate(folders[:assocs])]
            spy = _spy(srv.proc.pid, out, gil)
            t1 = time.perf_counter()
            send(srv.port, fresh, "MVI_NODE")
            spy_wall = time.perf_counter() - t1
            _stop(spy)
            for f in fresh:
                shutil.rmtree(f, ignore_errors=True)
            samples["gil" if gil else "cpu"] = (read_raw(out) if out.exists() else [], spy_wall)
    cpu_stacks, cpu_wall = samples["cpu"]
    total = sum(c for _, c in cpu_stacks) or 1
    groups = collections.Counter()
    leaves = collections.Counter()
    for stack, count in cpu_stacks:
        groups[_group(stack)] += count
        leaves[_leaf(stack)] += count
    gil_stacks, gil_wall = samples["gil"]
    gil_samples = sum(c for _, c in gil_stacks)
    gil_groups = collections.Counter()
    for stack, count in gil_stacks:
        gil_groups[_group(stack)] += count
    return {
        "associations": assocs,
        "workers": workers,
        "instances": n,
        "instances_per_s": rate,
        "node_cpu_ms_per_instance": 1000 * node_cpu / n,
        "sender_cpu_ms_per_instance": 1000 * sender_cpu / n,
        "node_cpu_share_of_wall": node_cpu / wall,  # 1.0 = one core busy all the time
        "profiled_cpu_samples": total,
        "profiled_seconds": cpu_wall,
        "groups_percent": {k: 100 * v / total for k, v in groups.most_common()},
        "top_leaves_percent": {k: 100 * v / total for k, v in leaves.most_common(15)},
        "gil_held_share_of_wall": gil_samples / (RATE * gil_wall) if gil_wall else None,
        # samples holding the GIL: Python running (the share above excludes the waits)
        "gil_groups_percent": {k: 100 * v / (gil_samples or 1) for k, v in gil_groups.most_common()},
    }


def _fresh_copy(folder: Path, dest: Path, i: int) -> Path:
    """The series again under new UIDs (a new study), so the node stages it anew."""
    seed = int(time.time() * 1000) % 100000 + i
    plain_ct_series(dest, slices=len(list(folder.iterdir())), matrix=512, seed=seed, patient_id=f"P{seed}")
    return dest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--assocs", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--json", default="bench/out/ingest_profile.json")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mvi-profile-"))
    try:
        series = [plain_ct_series(root / f"series{i}", slices=SLICES, matrix=512, seed=900 + i, patient_id=f"B{i}")
                  for i in range(max(args.assocs))]
        folders = [s[0].parent for s in series]
        report = {"load_average_start": os.getloadavg(), "cpus": os.cpu_count(),
                  "runs": [profile(folders, root, args.workers, a) for a in args.assocs],
                  "load_average_end": os.getloadavg()}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
