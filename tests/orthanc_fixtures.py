"""Real Orthanc processes (Debian package) on loopback ports with temporary storage."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx

from conftest import free_port, wait_port

ORTHANC = "/usr/sbin/Orthanc"
PYTHON_PLUGIN = "/usr/share/orthanc/plugins/libOrthancPython.so"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
REPO = Path(__file__).resolve().parents[1]


class OrthancProcess:
    def __init__(self, root: Path, aet: str, modalities: dict | None = None, extra: dict | None = None):
        self.root, self.aet = root, aet
        self.dicom_port, self.http_port = free_port(), free_port()
        self.config = {
            "Name": aet,
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "index"),
            "DicomAet": aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomModalities": modalities or {},
            "StableAge": 2,
            "Plugins": [],
            "SaveJobs": True,
            **(extra or {}),
        }
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> "OrthancProcess":
        self.root.mkdir(parents=True, exist_ok=True)
        cfg = self.root / "orthanc.json"
        cfg.write_text(json.dumps(self.config, indent=1))
        self._log = open(self.root / "orthanc.log", "ab")
        self.proc = subprocess.Popen([ORTHANC, str(cfg)], env={**os.environ, "TCP_NODELAY": "1"},
                                     stdout=self._log, stderr=subprocess.STDOUT)
        wait_port(self.http_port, 30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/system", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"Orthanc {self.aet} did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
            self._log.close()

    def get(self, path: str):
        return httpx.get(f"{self.url}{path}", timeout=30).json()

    def upload_folder(self, folder: Path) -> int:
        n = 0
        with httpx.Client(timeout=60) as c:
            for f in sorted(folder.rglob("*.dcm")):
                r = c.post(f"{self.url}/instances", content=f.read_bytes(), headers={"Content-Type": "application/dicom"})
                r.raise_for_status()
                n += 1
        return n
