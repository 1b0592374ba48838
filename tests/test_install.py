"""Installed the way operators install it: a wheel in a fresh virtual environment.

The wheel must carry the served reference model (a non-editable install used to look
for models in ``site-packages/models`` and start with "no model installed"), and a node
installed without ONNX Runtime must say which extra to install and exit 2.
"""

from __future__ import annotations

import os
import signal
import site
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port, wait_port

REPO = Path(__file__).resolve().parents[1]
#: the installed node alone: no PYTHONPATH leading back to this checkout
CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding the built wheel; dependencies come from this venv's
    site-packages through a .pth line (not processed recursively, so this checkout's
    editable install is not seen)."""
    root = tmp_path_factory.mktemp("install")
    wheels = root / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(REPO)], check=True, capture_output=True, timeout=600)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    [wheel] = wheels.glob("mvi_node-*.whl")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=600, env=CLEAN_ENV)
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True, env=CLEAN_ENV).stdout.strip()
    (Path(purelib) / "zz_test_dependencies.pth").write_text(site.getsitepackages()[0] + "\n", encoding="utf-8")
    return venv


def test_a_wheel_install_serves_the_shipped_model(installed, tmp_path):
    py = installed / "bin" / "python"
    where = subprocess.run([str(py), "-c", "import mvi_node; print(mvi_node.__file__)"], cwd=tmp_path,
                           check=True, capture_output=True, text=True, env=CLEAN_ENV).stdout
    assert where.startswith(str(installed)), where  # the wheel, not this checkout
    port, admin = free_port(), free_port()
    proc = subprocess.Popen([str(installed / "bin" / "mvi-node"), "serve", "--data-dir", str(tmp_path / "var"),
                             "--port", str(port), "--admin-port", str(admin)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=CLEAN_ENV)
    try:
        wait_port(port, timeout=90)
        deadline, ready = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"http://127.0.0.1:{admin}/readyz", timeout=5).json()
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert ready is not None
        model = ready["checks"]["model"]
        assert model["ok"] and "ct_ap_resnet18 0.2.1" in model["detail"], ready
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_without_onnx_runtime_serve_names_the_extra_and_exits_2(installed, tmp_path):
    code = ("import sys; sys.modules['onnxruntime'] = None\n"
            "from mvi_node.commands.main import main\n"
            f"sys.exit(main(['serve', '--data-dir', {str(tmp_path / 'var')!r}]))\n")
    out = subprocess.run([str(installed / "bin" / "python"), "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, env={**CLEAN_ENV, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 2 and "mvi-node[cpu]" in out.stderr and "Traceback" not in out.stderr
