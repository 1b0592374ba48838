"""Replay parts that need no network: busy hours, the pacer, requests and their redaction."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from pydantic import ValidationError

from mvi_node.config.replay import ArchiveSettings, ScheduleSettings
from mvi_node.replay.request import ReplayRequest, pattern
from mvi_node.replay.schedule import request_for, window
from mvi_node.replay.throttle import Pacer, in_busy_hours


def test_busy_hours_include_windows_across_midnight():
    at = lambda h, m: dt.datetime(2026, 1, 1, h, m)  # noqa: E731
    assert in_busy_hours(["07:00-19:00"], at(7, 0)) and in_busy_hours(["07:00-19:00"], at(18, 59))
    assert not in_busy_hours(["07:00-19:00"], at(19, 0)) and not in_busy_hours(["07:00-19:00"], at(6, 59))
    assert in_busy_hours(["22:00-02:00"], at(23, 30)) and in_busy_hours(["22:00-02:00"], at(1, 59))
    assert not in_busy_hours(["22:00-02:00"], at(2, 0))
    assert in_busy_hours(["00:00-24:00"], at(23, 59))
    assert not in_busy_hours([], at(12, 0))
    with pytest.raises(ValidationError):
        ArchiveSettings(ae_title="P", host="h", port=104, busy_hours=["7-19"])


def test_pacer_holds_the_rate_across_threads():
    pacer = Pacer(200.0)
    stamps: list[float] = []
    lock = threading.Lock()

    def work():
        for _ in range(25):
            pacer.acquire(1)
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=work) for _ in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = max(stamps) - t0
    assert len(stamps) == 100
    assert 99 / 200 * 0.9 <= elapsed <= 99 / 200 * 1.5, elapsed  # 100 slots of 5 ms
    assert not Pacer(0).limited


def test_request_needs_one_source_and_valid_values():
    with pytest.raises(ValidationError):
        ReplayRequest()
    with pytest.raises(ValidationError):
        ReplayRequest(pacs="P", folder="/x")
    with pytest.raises(ValidationError):
        ReplayRequest(pacs="P", date_from="2025-13-01")
    with pytest.raises(ValidationError):
        ReplayRequest(pacs="P", limit=True)
    with pytest.raises(ValidationError):
        ReplayRequest(pacs="P", destination="X@h:70000")
    r = ReplayRequest(pacs="P", date_from="2025-01-02", date_to="20250231", limit=3.0)
    assert (r.date_from, r.date_to, r.limit) == ("20250102", "20250228", 3)  # a day past the end: the last day
    # what the schema cannot say is never a refusal: a bad pattern is plain text
    assert pattern("a(b").search("xa(by") and not pattern("a(b").search("ab")
    assert ReplayRequest(pacs="PACS@10.0.0.5:104").pacs == "PACS@10.0.0.5:104"


def test_public_view_has_no_identifiers():
    r = ReplayRequest(pacs="PACS@10.0.0.5:104", accessions=["ACC123", "ACC456"], patient_id="PAT789",
                      requested_by="alice")
    shown = r.public()
    assert shown["accessions"] == 2 and shown["patient_id"] == "given" and shown["requested_by"] == "alice"
    assert "ACC123" not in str(shown) and "PAT789" not in str(shown)


def test_schedule_windows():
    s = ScheduleSettings(cron="0 1 * * *", window="last_7_days", modality=["CT"], name="weekly")
    assert window(s, dt.date(2026, 3, 10)) == ("20260303", "20260309")
    r = request_for(ScheduleSettings(cron="0 1 * * *"), "nightly", "ARCHIVE", dt.date(2026, 3, 1))
    assert (r.date_from, r.date_to, r.pacs, r.requested_by) == ("20260228", "20260228", "ARCHIVE", "schedule:nightly")
    with pytest.raises(ValidationError):
        ScheduleSettings(cron="0 1 * *")
    with pytest.raises(ValidationError):
        ScheduleSettings(cron="0 1 * * *", window="yesterday")


def test_a_pause_ends_when_its_reason_does():
    from mvi_node.replay.throttle import wait_while

    busy_until = time.monotonic() + 0.6
    heard: list[str] = []
    stop = threading.Event()
    t0 = time.monotonic()
    wait_while(lambda: "busy" if time.monotonic() < busy_until else "", stop, heard.append, poll=0.05)
    assert heard == ["busy"] and 0.55 <= time.monotonic() - t0 < 2.0
    stop.set()  # a stop ends the wait too
    wait_while(lambda: "forever", stop, heard.append, poll=0.05)


def test_control_characters_are_kept_and_a_nul_folder_is_no_folder(tmp_path):
    """What a fuzzer sends (control characters, a NUL in a path) is stored as sent and
    answered, never a 500 (lone surrogates pydantic refuses itself: 422)."""
    import json

    from mvi_node.admin.replays import _readable_folder
    from mvi_node.replay.store import ReplayStore

    store = ReplayStore(tmp_path / "replays.sqlite3")
    r = store.create(ReplayRequest(pacs="P", study_description="liver\x00\x1b", requested_by="\t"))
    back = store.get(r.id)
    assert back is not None and back.request.study_description == "liver\x00\x1b"
    json.dumps(back.request.public(), ensure_ascii=False).encode("utf-8")  # what the API sends
    assert not _readable_folder(str(tmp_path) + "\x00x", [tmp_path])
    assert _readable_folder(str(tmp_path), [tmp_path]) and not _readable_folder("/", [tmp_path])
