"""Shared fixtures: real node processes on loopback, DCMTK tools, synthetic series."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mvi_node.synth.plain_series import plain_ct_series

# One listener process unless a test asks for more: the default (one per core) would start
# a second interpreter beside every node the suite starts.
os.environ.setdefault("MVI_LISTENER__WORKERS", "1")
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
STORESCU = "/usr/bin/storescu"
ECHOSCU = "/usr/bin/echoscu"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def echoscu(port: int, calling: str = "ECHOSCU", called: str = "MVI_NODE") -> subprocess.CompletedProcess:
    return subprocess.run(
        [ECHOSCU, "-aet", calling, "-aec", called, "127.0.0.1", str(port)],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=30,
    )


def storescu(port: int, *paths: Path, calling: str = "STORESCU", extra: list[str] | None = None, **kw):
    cmd = [STORESCU, "-aet", calling, "-aec", "MVI_NODE", "--max-pdu", "131072", *(extra or [])]
    cmd += ["+sd", "+r", "-nh", "127.0.0.1", str(port), *map(str, paths)]
    return subprocess.run(cmd, env=DCMTK_ENV, capture_output=True, text=True, timeout=300, **kw)


class StoreSCP:
    """DCMTK's storescp as the PACS receiving results."""

    def __init__(self, port: int, out: Path):
        self.port, self.out = port, out
        out.mkdir(parents=True, exist_ok=True)
        self.proc = None

    def start(self) -> "StoreSCP":
        self.proc = subprocess.Popen(
            ["/usr/bin/storescp", "-aet", "PACS", "+xa", "-od", str(self.out), str(self.port)],
            env=DCMTK_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)

    def received(self) -> list[Path]:
        return sorted(p for p in self.out.iterdir() if p.is_file())

    def wait_for(self, n: int, timeout: float = 90, settle: float = 0.5) -> list[Path]:
        """The files received once there are ``n`` (or at the timeout), after ``settle``
        seconds more in which anything unexpected could still arrive."""
        deadline = time.monotonic() + timeout
        while len(self.received()) < n and time.monotonic() < deadline:
            time.sleep(0.25)
        time.sleep(settle)
        return self.received()

    def as_destination(self) -> dict[str, str]:
        """The node environment that sends results here."""
        return {"MVI_DISPATCH__DESTINATIONS": json.dumps([f"PACS@127.0.0.1:{self.port}"])}


@pytest.fixture
def pacs(tmp_path):
    """A DCMTK storescp on loopback as the PACS that receives the node's results."""
    scp = StoreSCP(free_port(), tmp_path / "pacs").start()
    yield scp
    scp.stop()


class NodeProcess:
    """``mvi-node serve`` in a child process with its own data dir and port."""

    def __init__(self, data_dir: Path, port: int, config: Path | None = None, quiet: float = 1.0, env=None):
        self.data_dir = data_dir
        self.port = port
        self.config = config
        self.quiet = quiet
        self.env = {**os.environ, **(env or {})}
        self.admin_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-node.log"

    def start(self) -> "NodeProcess":
        cmd = [sys.executable, "-m", "mvi_node", "serve", "--data-dir", str(self.data_dir)]
        cmd += ["--port", str(self.port), "--quiet-seconds", str(self.quiet), "--admin-port", str(self.admin_port)]
        if self.config:
            cmd += ["--config", str(self.config)]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        wait_port(self.port)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self._log.close()

    def status(self) -> dict:
        out = subprocess.run(
            [sys.executable, "-m", "mvi_node", "status", "--json", "--data-dir", str(self.data_dir)],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(out.stdout)

    def wait_jobs(self, n: int, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status()
            if sum(st["jobs"].values()) >= n and st["jobs"]["queued"] == 0 and st["jobs"]["running"] == 0:
                return st
            time.sleep(0.25)
        raise TimeoutError(f"expected {n} jobs, status {self.status()}")

    def status_jobs(self) -> list[dict]:
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.admin_port}/jobs", timeout=10).json()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def node(tmp_path):
    """A started node with a 1 s quiet period; stopped (SIGTERM) after the test."""
    started: list[NodeProcess] = []

    def make(**kw) -> NodeProcess:
        n = NodeProcess(tmp_path / f"var{len(started)}", kw.pop("port", None) or free_port(), **kw)
        started.append(n)
        return n.start()

    yield make
    for n in started:
        n.stop()


@pytest.fixture(scope="session")
def ct300(tmp_path_factory) -> list[Path]:
    """One 300-slice 512x512 CT series (about 150 MB)."""
    return plain_ct_series(tmp_path_factory.mktemp("ct300"), slices=300, matrix=512, seed=300)


@pytest.fixture
def raw_sender():
    """A pynetdicom SCU that sends CT files byte-for-byte (no re-encoding, so broken
    datasets reach the node as they are)."""
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE, _config as pynetdicom_config
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title="BADSENDER")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)

    def send(port: int, path: Path):
        assoc = ae.associate("127.0.0.1", port, ae_title="MVI_NODE")
        assert assoc.is_established
        try:
            return assoc.send_c_store(path)
        finally:
            assoc.release()

    yield send
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = False


def run_cli_json(args: list[str]) -> str:
    out = subprocess.run([sys.executable, "-m", "mvi_node", *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout
