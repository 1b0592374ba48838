"""The listener against DCMTK's storescu/echoscu over real loopback associations."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from conftest import DCMTK_ENV, STORESCU, echoscu, storescu
from mvi_node.synth.plain_series import plain_ct_series


def _dataset_bytes(path: Path) -> bytes:
    """The dataset part of a Part 10 file (everything after the file meta group)."""
    raw = path.read_bytes()
    ds = dcmread(path, stop_before_pixels=True)
    meta_len = 132 + 12 + ds.file_meta.FileMetaInformationGroupLength
    return raw[meta_len:]


def _staged(data_dir: Path) -> dict[str, Path]:
    return {p.stem: p for p in (data_dir / "staging").rglob("*.dcm")}


def _send_in_parallel(port: int, folders: list[Path], calling_prefix: str) -> list[subprocess.CompletedProcess]:
    """One storescu association per folder, all at once; calling AE titles <prefix><i>."""
    results: list[subprocess.CompletedProcess] = [None] * len(folders)  # type: ignore[list-item]

    def send(i: int) -> None:
        results[i] = storescu(port, folders[i], calling=f"{calling_prefix}{i}")

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(folders))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _temporaries(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "staging").rglob(".tmp-*")]


@pytest.mark.slow
def test_300_slice_series_is_staged_as_sent(node, ct300):
    n = node(quiet=1.0)
    result = storescu(n.port, ct300[0].parent)
    assert result.returncode == 0, result.stderr
    st = n.wait_jobs(1)
    assert st["studies"] == 1 and st["instances"] == 300 and st["duplicates"] == 0
    assert st["jobs"]["done"] == 1
    staged = _staged(n.data_dir)
    assert len(staged) == 300
    for src in ct300:
        sop = dcmread(src, stop_before_pixels=True).SOPInstanceUID
        dst = staged[sop]
        assert dst.parent.name == dcmread(src, stop_before_pixels=True).SeriesInstanceUID
        assert _dataset_bytes(dst) == _dataset_bytes(src), f"{src.name} differs once staged"
    assert dcmread(dst).file_meta.SourceApplicationEntityTitle == "STORESCU"


@pytest.mark.slow
def test_kill9_mid_transfer_then_resend_loses_and_duplicates_nothing(node, ct300):
    n = node(quiet=2.0)
    sender = subprocess.Popen(
        [STORESCU, "-v", "-aec", "MVI_NODE", "--max-pdu", "131072", "+sd", "+r", "-nh", "127.0.0.1", str(n.port), str(ct300[0].parent)],
        env=DCMTK_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Kill the node once about a third of the series is in.
    deadline = time.monotonic() + 60
    while len(_staged(n.data_dir)) < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    n.kill9()
    out, _ = sender.communicate(timeout=60)
    # storescu -v: "Sending file: X" ... "Received Store Response (Success)"
    acked, current = [], None
    for line in out.splitlines():
        m = re.search(r"Sending file: (.+)$", line)
        if m:
            current = Path(m.group(1).strip())
        elif "Received Store Response (Success)" in line and current is not None:
            acked.append(current)
            current = None
    assert 50 <= len(acked) < 300, f"kill landed outside the transfer ({len(acked)} acknowledged)"

    sop_of = {src: str(dcmread(src, stop_before_pixels=True).SOPInstanceUID) for src in acked}
    n.start()  # same data dir and port
    staged = _staged(n.data_dir)
    lost = [src.name for src in acked if sop_of[src] not in staged]
    assert not lost, f"acknowledged instances lost: {lost[:5]}"
    assert _temporaries(n.data_dir) == []

    result = storescu(n.port, ct300[0].parent)
    assert result.returncode == 0, result.stderr
    for src in acked:  # the resend's duplicates are dropped: the staged copies are the first ones
        assert _dataset_bytes(staged[sop_of[src]]) == _dataset_bytes(src), f"{src.name} differs once staged"
    st = n.wait_jobs(1)
    assert st["instances"] == 300 and st["studies"] == 1
    assert len(_staged(n.data_dir)) == 300
    assert st["duplicates"] >= len(acked)
    time.sleep(2.5)  # longer than the quiet period: no second completion may follow
    st = n.status()
    assert sum(st["jobs"].values()) == 1 and st["jobs"]["done"] == 1
    assert _temporaries(n.data_dir) == []


def test_16_parallel_associations_16_studies(node, tmp_path):
    n = node(quiet=1.5)
    folders = []
    for i in range(16):
        folder = tmp_path / f"study{i}"
        plain_ct_series(folder, slices=12, matrix=128, seed=1000 + i, patient_id=f"P{i}")
        folders.append(folder)
    results = _send_in_parallel(n.port, folders, "SCU")
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results if r.returncode]
    st = n.wait_jobs(16)
    assert st["studies"] == 16 and st["instances"] == 16 * 12
    assert st["jobs"]["done"] == 16


def test_duplicate_is_stored_once_and_counted(node, tmp_path):
    n = node(quiet=1.0)
    series = plain_ct_series(tmp_path / "s", slices=5, matrix=64, seed=7)
    assert storescu(n.port, series[0].parent).returncode == 0
    assert storescu(n.port, series[0].parent).returncode == 0
    st = n.status()
    assert st["instances"] == 5 and st["duplicates"] == 5
    assert len(_staged(n.data_dir)) == 5


def test_instance_after_completion_opens_a_new_round(node, tmp_path):
    n = node(quiet=1.0)
    first = plain_ct_series(tmp_path / "a", slices=4, matrix=64, seed=11)
    study_uid = dcmread(first[0]).StudyInstanceUID
    late = plain_ct_series(tmp_path / "b", slices=2, matrix=64, seed=12, study_uid=study_uid)
    assert storescu(n.port, first[0].parent).returncode == 0
    st = n.wait_jobs(1)
    assert st["jobs"]["done"] == 1
    assert storescu(n.port, late[0].parent).returncode == 0
    st = n.wait_jobs(2)
    assert st["studies"] == 1 and st["instances"] == 6 and st["jobs"]["done"] == 2


def test_echo_and_unknown_called_ae(node):
    n = node()
    assert echoscu(n.port).returncode == 0
    wrong = echoscu(n.port, called="NOT_ME")
    assert wrong.returncode != 0 and "Called AE Title Not Recognized" in (wrong.stdout + wrong.stderr)


def test_sigterm_shuts_down_cleanly(node):
    n = node()
    assert echoscu(n.port).returncode == 0
    assert n.stop() == 0
    assert "stopped" in n.log_text()


def test_listener_processes_share_the_port(node, tmp_path):
    n = node(quiet=1.5, env={"MVI_LISTENER__WORKERS": "2"})
    folders = []
    for i in range(4):
        folder = tmp_path / f"s{i}"
        plain_ct_series(folder, slices=10, matrix=128, seed=2000 + i, patient_id=f"W{i}")
        folders.append(folder)
    results = _send_in_parallel(n.port, folders, "W")
    assert all(r.returncode == 0 for r in results)
    st = n.wait_jobs(4)
    assert st["instances"] == 40 and st["jobs"]["done"] == 4
    assert n.log_text().count("listening as MVI_NODE") == 2  # parent + one child
    # A killed parent takes its listener children with it: the port is free again.
    n.kill9()
    deadline = time.monotonic() + 15  # the child gets SIGTERM and finishes what is in flight
    while echoscu(n.port).returncode == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert echoscu(n.port).returncode != 0
    n.start()
    assert echoscu(n.port).returncode == 0
