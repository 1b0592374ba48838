"""Synthetic MR traps (#12 item 3): a Dixon set before the fat-sat pre, subtraction series."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pydicom
import pytest

from mvi_node.synth import make_exam
from mvi_node.synth import spec as spec_module
from mvi_node.synth.dicomio import derive_uid
from mvi_node.synth.spec import draw_spec


def _headers(root: Path, entry: dict, uid: str) -> list[pydicom.Dataset]:
    num = entry["series_detail"][uid]["number"]
    files = sorted((root / entry["dicom_dir"] / f"S{num:04d}").glob("*.dcm"))
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in files]


@pytest.mark.parametrize("vendor, tesla", [("siemens", 3.0), ("ge", 1.5), ("philips", 1.5)])
def test_dixon_set_and_subtractions_in_headers(tmp_path, vendor, tesla):
    index = next(i for i in range(40) if draw_spec("mr", 21, i).field_strength == tesla)
    e = make_exam(tmp_path, "mr", 21, index, vendor=vendor, agent="gd-eob", matrix=32, hard_cases="none",
                  annotations="none", dixon=True, subtraction=True)
    assert e["hard_cases"]["dixon"] and e["hard_cases"]["subtraction"]
    details = e["series_detail"]
    pre = e["recipes"]["mr_3seq_grade"]["mr_t1_pre"]
    key = draw_spec("mr", 21, index).key()  # series UIDs derive from the exam key and the plan's name
    dixon = [derive_uid(key, "series", f"dixon_{kind}") for kind in ("water", "fat", "opp", "in")]
    assert [details[u]["number"] for u in dixon] == sorted(details[u]["number"] for u in dixon)
    assert len(dixon) == 4 and all(e["series"][u] == "other" for u in dixon)
    assert all(details[u]["number"] < details[pre]["number"] for u in dixon)  # written before the fat-sat pre
    heads = [_headers(tmp_path, e, u)[0] for u in dixon]
    pre_ds = _headers(tmp_path, e, pre)[0]
    fs = heads[0].MagneticFieldStrength
    assert fs == tesla
    tes = sorted({float(h.EchoTime) for h in heads})
    assert tes == ([2.3, 4.6] if fs == 1.5 else [1.15, 2.3])
    assert {h.AcquisitionTime for h in heads} == {heads[0].AcquisitionTime} != {pre_ds.AcquisitionTime}
    assert all(float(h.FlipAngle) == float(pre_ds.FlipAngle) and not h.ScanOptions for h in heads)
    if fs == 3.0:
        assert all(float(h.RepetitionTime) == float(pre_ds.RepetitionTime) for h in heads)
    subs = [derive_uid(key, "series", f"sub_{phase}") for phase in ("arterial", "portal")]
    assert all("SUB" in details[u]["description"] for u in subs)
    assert len(subs) == 2 and all(e["series"][u] == "other" for u in subs)
    art = _headers(tmp_path, e, next(u for u, r in e["series"].items() if r == "mr_arterial"))[0]
    sub = _headers(tmp_path, e, subs[0])[0]
    assert sub.AcquisitionTime == art.AcquisitionTime and sub.ImageType[0] == "DERIVED"
    assert "ContrastBolusAgent" in sub


def test_trap_draws_leave_every_other_draw_of_a_seed_unchanged(monkeypatch):
    with_traps = [draw_spec("mr", 77, i) for i in range(40)]
    drawn = [s for s in with_traps if s.hard.dixon or s.hard.subtraction]
    assert 0 < len(drawn) < 30  # a modest rate
    assert not any(s.hard.dixon or s.hard.subtraction for s in (draw_spec("ct", 77, i) for i in range(40)))
    assert not any(s.hard.dixon for s in (draw_spec("mr", 77, i, hard_cases="none") for i in range(10)))
    assert all(s.hard.dixon and s.hard.subtraction for s in (draw_spec("mr", 77, i, hard_cases="all") for i in range(3)))
    assert all(("dixon" in s.hard.as_dict()) == s.hard.dixon for s in with_traps)  # manifests unchanged when off
    monkeypatch.setattr(spec_module, "MR_TRAP_RATES", {})
    without = [draw_spec("mr", 77, i) for i in range(40)]
    for a, b in zip(with_traps, without):
        assert replace(a, hard=replace(a.hard, dixon=False, subtraction=False)) == b
