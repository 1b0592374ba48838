"""Headers are parsed once per instance per job, and before the job (issue 17 item 3).

The exam is sent by DCMTK storescu to an in-process node over loopback; every pydicom
parse of a staged file in this process is counted (``pydicom.filereader.read_partial``,
which every ``dcmread`` goes through), with the thread that made it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pydicom.filereader
import pytest

from conftest import free_port, storescu
from mvi_node.app.node import Node
from mvi_node.config import load_settings
from mvi_node.jobs import JobState
from mvi_node.select.headers import HeaderCache
from mvi_node.synth import make_exam
from mvi_node.synth.plain_series import plain_ct_series


@pytest.fixture
def parses(monkeypatch):
    """(path, header only?, thread name) of every parse of a file in this process."""
    seen: list[tuple[str, bool, str]] = []
    real = pydicom.filereader.read_partial

    def counting(fileobj, stop_when=None, *args, **kwargs):
        name = getattr(fileobj, "name", None)
        if isinstance(name, str):
            seen.append((name, stop_when is not None, threading.current_thread().name))
        return real(fileobj, stop_when, *args, **kwargs)

    monkeypatch.setattr(pydicom.filereader, "read_partial", counting)
    return seen


def test_each_header_is_parsed_once_while_the_study_arrives(parses, tmp_path):
    exam = tmp_path / "exam"
    make_exam(exam, "ct", seed=4343, index=0, mvi=True, hard_cases="none", annotations="seg", seg_on="arterial",
              matrix=128)
    sent = sum(1 for _ in exam.rglob("*.dcm"))
    settings = load_settings(None, {"data_dir": str(tmp_path / "var"), "listener.port": free_port(),
                                    "listener.workers": 1, "admin.enabled": False,
                                    "completion.quiet_seconds": 1.0, "completion.poll_seconds": 0.1})
    node = Node(settings)
    node.start()
    try:
        assert storescu(node.port, exam, extra=["-R"]).returncode == 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            jobs = node.jobs.list()
            if jobs and all(j.state in (JobState.DONE, JobState.FAILED, JobState.DEAD) for j in jobs):
                break
            time.sleep(0.1)
        (job,) = node.jobs.list()
        assert job.state is JobState.DONE, job.last_error
        assert len(node.headers) == 0  # the job's study is forgotten when it ends
    finally:
        node.stop()
    staging = str(settings.staging_dir)
    staged = [p for p in parses if p[0].startswith(staging)]
    headers = Counter(path for path, header_only, _thread in staged if header_only)
    assert len(headers) == sent and set(headers.values()) == {1}, "every staged header parsed exactly once"
    assert node.headers.parsed == sent
    early = sum(1 for _path, header_only, thread in staged if header_only and thread == "header-prefetch")
    assert early > sent // 2, f"only {early} of {sent} headers parsed while the study arrived"
    assert job.result["headers_parsed"] == sent - early  # the job says how many it had to parse itself
    # pixels are read only of what the result shows: the ROI's slices, the key slices, the SEG
    (record,) = [r for r in job.result["inference"][0] if r["outcome"] == "ok"]
    target = record["gradcam"]["series_instance_uid"]
    full = Counter(path for path, header_only, _thread in staged if not header_only)
    assert all(f"/{target}/" in path or _is_seg(path) for path in full), full
    assert len(full) <= record["slices"] + 1


def _is_seg(path: str) -> bool:
    return str(pydicom.dcmread(path, stop_before_pixels=True).Modality) == "SEG"


def test_the_cache_parses_again_only_when_the_file_changed(tmp_path):
    first, second = plain_ct_series(tmp_path / "series", slices=2, matrix=16, seed=5)
    cache = HeaderCache(max_files=10)
    a = cache.read(first)
    assert cache.read(first) is a and cache.parsed == 1
    time.sleep(0.05)  # a later write: another mtime
    Path(first).write_bytes(Path(second).read_bytes())  # another instance under the same name
    b = cache.read(first)
    assert b is not a and cache.parsed == 2 and b.SOPInstanceUID == pydicom.dcmread(second).SOPInstanceUID
    assert cache.forget(Path(first).parent) == 1 and len(cache) == 0


def test_a_full_cache_prefetches_nothing_and_the_reader_still_gets_its_headers(tmp_path):
    files = plain_ct_series(tmp_path / "series", slices=3, matrix=16, seed=6)
    cache = HeaderCache(max_files=2)
    assert [cache.prefetch(f) for f in files] == [True, True, False]
    assert len(cache) == 2
    assert cache.read(files[2]).SOPInstanceUID and len(cache) == 2 and cache.parsed == 3
