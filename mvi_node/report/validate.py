"""Checks with the tools PACS vendors trust: dicom3tools ``dciodvfy`` and DCMTK
``dsrdump`` / ``dsr2html``. Messages carry file names and tool output only."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

DCIODVFY = shutil.which("dciodvfy", path="/usr/bin") or "/usr/bin/dciodvfy"
DSRDUMP = shutil.which("dsrdump", path="/usr/bin") or "/usr/bin/dsrdump"
DSR2HTML = shutil.which("dsr2html", path="/usr/bin") or "/usr/bin/dsr2html"


def _run(tool: str, path: Path | str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([tool, str(path)], capture_output=True, text=True, errors="replace", timeout=timeout)


def dciodvfy_errors(path: Path | str) -> list[str]:
    """Lines of ``dciodvfy`` output that start with "Error" (empty: valid)."""
    out = _run(DCIODVFY, path)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def dsr2html(path: Path | str) -> str:
    """The SR rendered by DCMTK; raises RuntimeError when it cannot be rendered."""
    out = _run(DSR2HTML, path)
    if out.returncode != 0:
        raise RuntimeError(f"dsr2html failed on {Path(path).name} (exit {out.returncode}): {out.stderr[-500:]}")
    return out.stdout


def dsrdump(path: Path | str) -> str:
    """The SR content tree as DCMTK reads it; raises RuntimeError when it cannot."""
    out = _run(DSRDUMP, path)
    if out.returncode != 0:
        raise RuntimeError(f"dsrdump failed on {Path(path).name} (exit {out.returncode}): {out.stderr[-500:]}")
    return out.stdout
