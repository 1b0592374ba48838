"""The node's memory while 16 associations send 50 MB instances at once (issue #15).

Each of 16 DCMTK storescu senders sends ``--per`` CT instances of 5120x5120 16-bit pixels
(52 MB each) on its own association, all at the same time. The resident memory of the
node's whole process tree (listener children included) is sampled every 20 ms from
/proc; reported: at rest before the send, the peak during it, and the peak less the
rest, beside the bytes in flight (16 instances). Orthanc, in the same run, is the peer.

Usage: python bench/ingest_memory.py [--assocs 16] [--per 2] [--json bench/out/ingest_memory.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import ENV, mvi_node, orthanc  # noqa: E402
from bench.ingest_profile import _tree  # noqa: E402
from mvi_node.synth.plain_series import plain_ct_series  # noqa: E402

MATRIX = 5120
MiB = 1 << 20


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.every):
            self.peak = max(self.peak, rss_bytes(_tree(self.pid)))

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak


def send_all(port: int, folders: list[Path], called: str) -> float:
    procs = [
        subprocess.Popen(["/usr/bin/storescu", "-aec", called, "--max-pdu", "131072", "+sd", "+r", "-nh",
                          "127.0.0.1", str(port), str(f)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for f in folders
    ]
    start = time.perf_counter()
    for p in procs:
        _, err = p.communicate(timeout=1200)
        if p.returncode != 0:
            raise RuntimeError(err.decode()[-2000:])
    return time.perf_counter() - start


def measure(name: str, make, called: str, folders: list[Path], root: Path) -> dict:
    work = root / name
    work.mkdir()
    with make(work) as srv:
        time.sleep(2)
        pids = _tree(srv.proc.pid)
        rest = rss_bytes(pids)
        sampler = RssSampler(srv.proc.pid)
        sampler.start()
        wall = send_all(srv.port, folders, called)
        peak = sampler.stop()
        stored = sum(1 for p in work.rglob("*") if p.is_file() and p.stat().st_size > 50 * MiB)
    shutil.rmtree(work, ignore_errors=True)
    return {"rss_at_rest_mib": rest / MiB, "rss_peak_mib": peak / MiB, "rss_growth_mib": (peak - rest) / MiB,
            "seconds": wall, "instances_stored": stored, "processes": len(pids)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--assocs", type=int, default=16)
    ap.add_argument("--per", type=int, default=2, help="instances each association sends")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="node listener processes to try")
    ap.add_argument("--json", default="bench/out/ingest_memory.json")
    args = ap.parse_args()
    # the readiness probe (a bare TCP connect) holds one of the node's 16 association
    # slots until pynetdicom's ACSE timeout (30 s): room for it beside the 16 senders
    ENV["MVI_LISTENER__MAX_ASSOCIATIONS"] = str(args.assocs + 4)
    root = Path(tempfile.mkdtemp(prefix="mvi-memory-"))
    try:
        folders = []
        for i in range(args.assocs):
            paths = plain_ct_series(root / f"s{i}", slices=args.per, matrix=MATRIX, seed=700 + i, patient_id=f"M{i}")
            folders.append(paths[0].parent)
        size = paths[0].stat().st_size
        report = {"assocs": args.assocs, "per_association": args.per, "instance_mib": size / MiB,
                  "in_flight_mib": args.assocs * size / MiB, "load_average_start": os.getloadavg(), "peers": {}}
        peers = {f"mvi-node-{w}proc": (lambda d, w=w: mvi_node(d, w), "MVI_NODE") for w in args.workers}
        peers["orthanc"] = (orthanc, "ORTHANC")
        for name, (make, called) in peers.items():
            report["peers"][name] = measure(name, make, called, folders, root)
            print(name, json.dumps(report["peers"][name]), flush=True)
        report["load_average_end"] = os.getloadavg()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
