"""Ingest benchmark: one 300-slice 512x512 CT series, 1 and 4 parallel associations.

Measured in the same run, same sender (DCMTK storescu, TCP_NODELAY=1, 128 KiB PDU):
  dcmtk-storescp   writes files, no fsync: the speed peer
  orthanc          Debian's Orthanc: the staging peer
  fsync-floor      a loop writing the same bytes with fsync + rename (+ folder fsync
                   variant), no network: the limit of durable storage on this disk
  mvi-node         fsync durability (default), 1 listener process and one per core
  mvi-node-batched the opt-in weaker mode, reported separately

Usage: python bench/ingest.py [--runs 3] [--out bench/out/ingest.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvi_node.synth.plain_series import plain_ct_series  # noqa: E402

ENV = {**os.environ, "TCP_NODELAY": "1"}
SLICES = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(port)


def send(port: int, folders: list[Path], called: str) -> float:
    """Send each folder on its own association, all at once; return instances/s."""
    procs: list[subprocess.Popen] = []
    start = time.perf_counter()
    for folder in folders:
        procs.append(
            subprocess.Popen(
                ["/usr/bin/storescu", "-aec", called, "--max-pdu", "131072", "+sd", "+r", "-nh", "127.0.0.1", str(port), str(folder)],
                env=ENV,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
    for p in procs:
        _, err = p.communicate(timeout=600)
        if p.returncode != 0:
            raise RuntimeError(err.decode())
    return SLICES * len(folders) / (time.perf_counter() - start)


def wait_listeners(admin_port: int, timeout: float = 60) -> None:
    """Until the node's /readyz says every listener process accepts: a child listener
    starts a second or two after the port opens, and a run begun before would time one
    process (how the 2-process figures before 2026-12-04 were taken)."""
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if httpx.get(f"http://127.0.0.1:{admin_port}/readyz", timeout=2).json()["checks"]["listeners"]["ok"]:
                return
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.1)
    raise TimeoutError("listener processes")


class Server:
    def __init__(self, cmd: list[str], port: int, workdir: Path, env=None, admin_port: int | None = None):
        self.cmd, self.port, self.workdir, self.env, self.admin_port = cmd, port, workdir, env or ENV, admin_port

    def __enter__(self):
        self.log = open(self.workdir / "server.log", "wb")
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port)
        if self.admin_port is not None:
            wait_listeners(self.admin_port)
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def storescp(workdir: Path) -> Server:
    port = free_port()
    out = workdir / "in"
    out.mkdir()
    return Server(["/usr/bin/storescp", "--max-pdu", "131072", "-od", str(out), "-aet", "STORESCP", str(port)], port, workdir)


def orthanc(workdir: Path) -> Server:
    port, http = free_port(), free_port()
    cfg = {
        "Name": "bench",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "DicomAet": "ORTHANC",
        "DicomPort": port,
        "HttpPort": http,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "Plugins": [],
        "ConcurrentJobs": 2,
    }
    (workdir / "orthanc.json").write_text(json.dumps(cfg))
    return Server(["/usr/sbin/Orthanc", str(workdir / "orthanc.json")], port, workdir)


def mvi_node(workdir: Path, workers: int, durability: str = "fsync") -> Server:
    port, admin = free_port(), free_port()
    # no model warm-up: it would load ONNX sessions on the CPUs while the first run is timed
    env = {**ENV, "MVI_LISTENER__WORKERS": str(workers), "MVI_STAGING__DURABILITY": durability, "MVI_LOG_LEVEL": "WARNING",
           "MVI_INFERENCE__WARM_UP": "false", "MVI_ADMIN__PORT": str(admin)}
    cmd = [sys.executable, "-m", "mvi_node", "serve", "--data-dir", str(workdir / "var"), "--port", str(port), "--quiet-seconds", "3600"]
    return Server(cmd, port, workdir, env, admin)


def fsync_floor(files: list[Path], workdir: Path, folder_sync: bool) -> float:
    blobs = [f.read_bytes() for f in files]
    out = workdir / "floor"
    out.mkdir()
    start = time.perf_counter()
    for i, blob in enumerate(blobs):
        tmp = out / f".tmp{i}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        os.write(fd, blob)
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, out / f"{i}.dcm")
        if folder_sync:
            dfd = os.open(out, os.O_RDONLY)
            os.fsync(dfd)
            os.close(dfd)
    return len(blobs) / (time.perf_counter() - start)


def fsync_floor_parallel(series: list[list[Path]], workdir: Path) -> float:
    rates: list[float] = []
    start = time.perf_counter()
    threads = [
        threading.Thread(target=lambda s=s, i=i: rates.append(fsync_floor(s, workdir / f"p{i}", True)))
        for i, s in enumerate(series)
    ]
    for i in range(len(series)):
        (workdir / f"p{i}").mkdir()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return SLICES * len(series) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default="bench/out/ingest.json")
    ap.add_argument("--append", help="append a Markdown section to this file (bench/RESULTS.md)")
    ap.add_argument("--peers", help="comma-separated subset of the peers (a quick A/B); default all")
    ap.add_argument("--assocs", default="1,4", help="association counts to run, e.g. 1")
    args = ap.parse_args()
    assoc_counts = [int(a) for a in args.assocs.split(",")]
    root = Path(tempfile.mkdtemp(prefix="mvi-bench-"))
    series = [plain_ct_series(root / f"series{i}", slices=SLICES, matrix=512, seed=900 + i, patient_id=f"B{i}") for i in range(4)]
    folders = [s[0].parent for s in series]
    cpus = os.cpu_count() or 1
    peers = {
        "dcmtk-storescp": (storescp, "STORESCP"),
        "orthanc": (orthanc, "ORTHANC"),
        "mvi-node": (lambda w: mvi_node(w, 1), "MVI_NODE"),
        f"mvi-node-{cpus}proc": (lambda w: mvi_node(w, cpus), "MVI_NODE"),
        "mvi-node-batched": (lambda w: mvi_node(w, 1, "batched"), "MVI_NODE"),
    }
    if args.peers:
        peers = {name: peers[name] for name in args.peers.split(",")}
    results: dict[str, dict[str, list[float]]] = {}
    for run in range(args.runs):
        for name, (make, aet) in peers.items():
            for assocs in assoc_counts:
                work = root / f"{name}-{assocs}-{run}"
                work.mkdir()
                with make(work) as srv:
                    rate = send(srv.port, folders[:assocs], aet)
                results.setdefault(name, {}).setdefault(str(assocs), []).append(rate)
                shutil.rmtree(work, ignore_errors=True)
                print(f"run {run} {name:18s} {assocs} assoc: {rate:7.1f} inst/s", flush=True)
        for name, fn in {
            "fsync-floor": lambda w: fsync_floor(series[0], w, False),
            "fsync-floor+dir": lambda w: fsync_floor(series[0], w, True),
        }.items():
            work = root / f"{name}-{run}"
            work.mkdir()
            results.setdefault(name, {}).setdefault("1", []).append(fn(work))
            shutil.rmtree(work)
        work = root / f"floor4-{run}"
        work.mkdir()
        results.setdefault("fsync-floor+dir", {}).setdefault("4", []).append(fsync_floor_parallel(series, work))
        shutil.rmtree(work)
    medians = {n: {a: statistics.median(v) for a, v in by.items()} for n, by in results.items()}
    # Ratios are taken within each run (same load on the machine), then the median over runs.
    def ratio(num: str, den: str, a_num: str, a_den: str = "1") -> float:
        if a_num not in results.get(num, {}) or a_den not in results.get(den, {}):
            return float("nan")  # a peer or association count left out of this run
        return statistics.median(x / y for x, y in zip(results[num][a_num], results[den][a_den]))

    ratios = {
        "mvi/orthanc 1 assoc": ratio("mvi-node", "orthanc", "1", "1"),
        "mvi/orthanc 4 assoc": ratio("mvi-node", "orthanc", "4", "4"),
        "mvi/fsync-floor 1 assoc": ratio("mvi-node", "fsync-floor", "1"),
        "mvi/fsync-floor+dir 1 assoc": ratio("mvi-node", "fsync-floor+dir", "1"),
        f"mvi-{cpus}proc/fsync-floor+dir 4 assoc": ratio(f"mvi-node-{cpus}proc", "fsync-floor+dir", "4", "4"),
        "mvi/dcmtk 1 assoc": ratio("mvi-node", "dcmtk-storescp", "1", "1"),
    }
    report = {"runs": args.runs, "slices": SLICES, "matrix": 512, "cpus": cpus, "raw": results, "median": medians,
              "ratios": ratios, "load_average": os.getloadavg()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps({"median": medians, "ratios": ratios}, indent=2))
    if args.append:
        with open(args.append, "a") as fh:
            fh.write(markdown(report))
    shutil.rmtree(root, ignore_errors=True)


def markdown(report: dict) -> str:
    rows = []
    for name, by in report["median"].items():
        rows.append(f"| {name} | {by.get('1', float('nan')):.0f} | {by['4']:.0f} |" if "4" in by else f"| {name} | {by['1']:.0f} | - |")
    ratios = "\n".join(f"| {k} | {v:.2f}x |" for k, v in report["ratios"].items())
    return (
        "\n## Ingest: one 300-slice 512x512 CT series (bench/ingest.py)\n\n"
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {report['cpus']} shared CPU cores; "
        f"median of {report['runs']} runs; sender DCMTK storescu, TCP_NODELAY=1 for every DCMTK-based process, "
        "128 KiB max PDU both sides; load average at the end "
        f"{' '.join(f'{x:.2f}' for x in report['load_average'])}.\n\n"
        "| peer | instances/s, 1 association | instances/s, 4 associations |\n|---|---|---|\n"
        + "\n".join(rows)
        + "\n\n| ratio (within each run, median over runs) | value |\n|---|---|\n"
        + ratios
        + "\n\nCommand: `python bench/ingest.py --runs 3 --append bench/RESULTS.md`.\n"
    )


if __name__ == "__main__":
    main()
