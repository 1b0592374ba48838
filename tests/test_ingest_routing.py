"""What PACS auto-routing really sends: the whole study (issue #15, "Accept what PACS routes").

The PACS sends screen captures, dose reports and PDFs with the images, and logs a failed
transfer for every study the node refuses part of. By default every storage SOP class
is accepted; what no recipe reads is stored and ignored by selection, or acknowledged
and discarded (``[listener] unused_sop_classes``), and counted either way.
"""

from __future__ import annotations

import subprocess

import httpx
import pytest
from pydicom import dcmread

from conftest import DCMTK_ENV, STORESCU, echoscu
from routed_objects import routed_extras
from mvi_node.common.filepool import not_spare
from mvi_node.synth.plain_series import plain_ct_series


def _routed_study(tmp_path):
    ct = plain_ct_series(tmp_path / "study" / "ct", slices=3, matrix=64, seed=31)
    extras = routed_extras(ct[0], tmp_path / "study")
    return tmp_path / "study", ct, extras


def _route(port: int, folder) -> subprocess.CompletedProcess:
    # storescu -R: one presentation context per SOP class found, as a PACS router proposes them
    return subprocess.run(
        [STORESCU, "-aet", "PACS", "-aec", "MVI_NODE", "-R", "+sd", "+r", "-nh", "127.0.0.1", str(port), str(folder)],
        env=DCMTK_ENV, capture_output=True, text=True, timeout=120,
    )


def _unused_metrics(n) -> dict[tuple[str, str], float]:
    out = {}
    for line in httpx.get(f"http://127.0.0.1:{n.admin_port}/metrics", timeout=10).text.splitlines():
        if line.startswith("mvi_unused_instances_total{"):
            labels, value = line.rsplit(" ", 1)
            action = labels.split('action="')[1].split('"')[0]
            sop_class = labels.split('sop_class="')[1].split('"')[0]
            out[(action, sop_class)] = float(value)
    return out


def test_a_routed_study_is_accepted_whole_and_selection_ignores_the_extras(node, tmp_path):
    n = node()
    folder, ct, extras = _routed_study(tmp_path)
    out = _route(n.port, folder)
    said = out.stdout + out.stderr
    assert out.returncode == 0 and "No presentation context" not in said and "Failed" not in said, said
    st = n.wait_jobs(1)
    assert st["instances"] == 6 and st["jobs"]["done"] == 1
    staged = {p.stem for p in (n.data_dir / "staging").rglob("*.dcm")}
    assert {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in extras.values()} <= staged
    (job,) = n.status_jobs()
    detail = httpx.get(f"http://127.0.0.1:{n.admin_port}/jobs/{job['id']}", timeout=10).json()
    series = detail["result"]["selection"]["studies"][0]["series"]
    roles = {s["modality"]: (s["role"], s["rule"]) for s in series}
    assert roles["OT"] == ("other", "screen-save")
    assert roles["SR"] == ("other", "dose-report")
    assert roles["DOC"][0] == "other"
    assert _unused_metrics(n) == {
        ("stored", "Secondary Capture Image Storage"): 1.0,
        ("stored", "X-Ray Radiation Dose SR Storage"): 1.0,
        ("stored", "Encapsulated PDF Storage"): 1.0,
    }
    assert echoscu(n.port).returncode == 0


def test_discard_acknowledges_unused_classes_without_keeping_them(node, tmp_path):
    cfg = tmp_path / "node.toml"
    cfg.write_text('[listener]\nunused_sop_classes = "discard"\n')
    n = node(config=cfg)
    folder, ct, extras = _routed_study(tmp_path)
    out = _route(n.port, folder)
    said = out.stdout + out.stderr
    assert out.returncode == 0 and "No presentation context" not in said and "Failed" not in said, said
    st = n.wait_jobs(1)
    assert st["instances"] == 3 and st["jobs"]["done"] == 1
    staged = {p.stem for p in (n.data_dir / "staging").rglob("*.dcm")}
    assert staged == {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in ct}
    assert not_spare(n.data_dir / "incoming") == []
    assert _unused_metrics(n) == {
        ("discarded", "Secondary Capture Image Storage"): 1.0,
        ("discarded", "X-Ray Radiation Dose SR Storage"): 1.0,
        ("discarded", "Encapsulated PDF Storage"): 1.0,
    }
    assert echoscu(n.port).returncode == 0
