"""Synthetic liver CT/MR generator: determinism, validity, roles, truth, hard cases."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mvi_node.synth import generate_ct, make_exam, simulate_exam
from mvi_node.synth.anatomy import L
from mvi_node.synth.clinical import draw_clinical
from mvi_node.synth.manifest import ROLES
from mvi_node.synth.spec import HARD_CASE_NAMES, VENDORS, draw_spec

DCIODVFY = shutil.which("dciodvfy") or ("/usr/bin/dciodvfy" if Path("/usr/bin/dciodvfy").exists() else None)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _series_files(root: Path, entry: dict, uid: str) -> list[Path]:
    num = entry["series_detail"][uid]["number"]
    return sorted((root / entry["dicom_dir"] / f"S{num:04d}").glob("*.dcm"))


@pytest.fixture(scope="module")
def ct_pop(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ct")
    return out, generate_ct(out, 2, seed=11, matrix=64, hard_cases="none", annotations="seg")


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path, ct_pop) -> None:
    out, _ = ct_pop
    again = tmp_path / "again"
    generate_ct(again, 2, seed=11, matrix=64, hard_cases="none", annotations="seg")
    assert _hashes(out) == _hashes(again)
    other = tmp_path / "other"
    generate_ct(other, 2, seed=12, matrix=64, hard_cases="none", annotations="seg")
    a, b = _hashes(out), _hashes(other)
    assert a.get("manifest.json") != b.get("manifest.json")


def test_gsps_and_multiphase_mr_deterministic(tmp_path: Path) -> None:
    for run in ("a", "b"):
        make_exam(tmp_path / run / "ct", "ct", 4, 0, matrix=64, annotations="circle", hard_cases="none")
        make_exam(tmp_path / run / "mr", "mr", 4, 1, matrix=64, vendor="ge", agent="gd-eob",
                  hard_cases="all", annotations="seg")
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")


def test_files_readable_and_seg_matches_truth(ct_pop) -> None:
    import highdicom as hd

    out, manifest = ct_pop
    for f in out.rglob("*.dcm"):
        pydicom.dcmread(f)
    for entry in manifest["studies"]:
        seg_uid = next(u for u, r in entry["series"].items() if r == "seg")
        seg = hd.seg.segread(_series_files(out, entry, seg_uid)[0])
        ref_uid = entry["seg_reference"]
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ref_uid
        ref_files = _series_files(out, entry, ref_uid)
        assert ref_files, "SEG references a series that is not on disk"
        by_sop = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: i for i, p in enumerate(ref_files)}
        truth = np.load(out / entry["truth"]["dir"] / "lesions.npy")
        assert truth.any()
        assert ref_uid in entry["truth"]["series"]
        rebuilt = np.zeros_like(truth, dtype=bool)
        frames = seg.pixel_array if seg.pixel_array.ndim == 3 else seg.pixel_array[None]
        for k, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
            sop = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            rebuilt[by_sop[sop]] |= frames[k] > 0
        assert np.array_equal(rebuilt, truth > 0)


@pytest.mark.skipif(DCIODVFY is None, reason="dicom3tools not installed")
def test_dciodvfy_ct_seg_gsps(tmp_path: Path, ct_pop) -> None:
    out, manifest = ct_pop
    entry = manifest["studies"][0]
    art = entry["recipes"]["ct_ap_resnet18"]["ct_arterial"]
    seg_uid = next(u for u, r in entry["series"].items() if r == "seg")
    circ = make_exam(tmp_path, "ct", 4, 0, matrix=64, annotations="circle", hard_cases="none")
    gsps_uid = next(u for u, r in circ["series"].items() if r == "annotation")
    files = [_series_files(out, entry, art)[0], _series_files(out, entry, seg_uid)[0],
             _series_files(tmp_path, circ, gsps_uid)[0]]
    for f in files:
        res = subprocess.run([DCIODVFY, str(f)], capture_output=True, text=True, timeout=60)
        errors = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]
        assert not errors, (f, errors)


def test_roles_per_vendor_and_agent(tmp_path: Path) -> None:
    ct_roles = {"ct_non_contrast", "ct_arterial", "ct_portal_venous", "ct_delayed", "seg"}
    mr_common = {"mr_t1_pre", "mr_arterial", "mr_portal_venous", "mr_transitional", "mr_t2", "mr_dwi", "mr_adc"}
    for i, vendor in enumerate(VENDORS):
        e = make_exam(tmp_path / vendor, "ct", 3, i, vendor=vendor, matrix=64, hard_cases="none")
        assert set(e["series"].values()) <= set(ROLES)
        assert ct_roles <= set(e["series"].values()), vendor
        assert "ct_ap_resnet18" in e["recipes"]
        for agent in ("gd-eob", "extracellular"):
            e = make_exam(tmp_path / f"{vendor}-{agent}", "mr", 3, i, vendor=vendor, agent=agent, matrix=64,
                          hard_cases="none", annotations="none")
            roles = set(e["series"].values())
            assert roles <= set(ROLES)
            want = mr_common | ({"mr_hepatobiliary"} if agent == "gd-eob" else set())
            assert want <= roles, (vendor, agent, want - roles)
            if agent == "extracellular":
                assert "mr_hepatobiliary" not in roles
            assert set(e["recipes"]["mr_3seq_grade"]) == {"mr_t1_pre", "mr_portal_venous", "mr_transitional"}


def test_roi_sr_annotation(tmp_path: Path) -> None:
    e = make_exam(tmp_path, "mr", 8, 0, matrix=64, annotations="sr", hard_cases="none", agent="gd-eob")
    (uid,) = [u for u, r in e["series"].items() if r == "annotation"]
    sr = pydicom.dcmread(_series_files(tmp_path, e, uid)[0])
    assert sr.Modality == "SR" and sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    refs = {i.ReferencedSeriesSequence[0].SeriesInstanceUID for i in sr.CurrentRequestedProcedureEvidenceSequence}
    assert refs == {e["annotation_reference"]}
    if DCIODVFY:
        res = subprocess.run([DCIODVFY, str(_series_files(tmp_path, e, uid)[0])], capture_output=True, text=True)
        assert not [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]


def test_seg_on_portal_references_portal_series(tmp_path: Path) -> None:
    import highdicom as hd

    e = make_exam(tmp_path, "ct", 6, 0, matrix=64, seg_on="portal", hard_cases="none")
    assert e["series"][e["seg_reference"]] == "ct_portal_venous"
    seg_uid = next(u for u, r in e["series"].items() if r == "seg")
    seg = hd.seg.segread(_series_files(tmp_path, e, seg_uid)[0])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == e["seg_reference"]
    assert seg.FrameOfReferenceUID == e["frame_of_reference_uid"]


def test_population_clinical_and_hard_cases_present() -> None:
    specs = [draw_spec("ct", 0, i) for i in range(40)] + [draw_spec("mr", 0, i) for i in range(40)]
    pos = [s for s in specs if s.mvi]
    neg = [s for s in specs if not s.mvi]
    assert 0.25 < len(pos) / len(specs) < 0.55
    clin = {id(s): draw_clinical(s) for s in specs}
    mean = lambda group, key: float(np.mean([clin[id(s)][key] for s in group]))  # noqa: E731
    assert mean(pos, "main_diameter_mm") > mean(neg, "main_diameter_mm")
    assert mean(pos, "afp_ng_ml") > mean(neg, "afp_ng_ml")
    assert any(clin[id(s)]["afp_ng_ml"] > 400 for s in pos)
    for name in HARD_CASE_NAMES:
        drawn = any(getattr(s.hard, name) for s in specs)
        # enhanced_multiframe is set by hand only: seeded exams stay classic
        assert drawn == (name != "enhanced_multiframe"), name
    assert {s.hard.language for s in specs} == {"en", "de", "es", "zh"}
    assert {s.vendor for s in specs} == set(VENDORS)
    assert {s.seg_on for s in specs} == {"arterial", "portal"}
    assert {s.grade for s in pos} == {"M1", "M2"}


def test_ct_hu_by_phase(tmp_path: Path) -> None:
    sim = simulate_exam("ct", 2, 0, matrix=128, mvi=True, noise=5.0)
    tumor = sim.truth > 0
    liver = (sim.labels == int(L.LIVER)) & ~tumor
    aorta = sim.labels == int(L.AORTA)
    m = {p: (float(v[tumor].mean()), float(v[liver].mean())) for p, v in sim.volumes.items()}
    assert float(sim.volumes["arterial"][aorta].mean()) > 200
    assert 40 < m["native"][1] < 70 and 95 < m["portal"][1] < 125
    assert m["arterial"][0] > m["arterial"][1]
    assert m["portal"][0] < m["portal"][1]
    assert m["delayed"][0] < m["delayed"][1]
    assert float(sim.volumes["native"][sim.labels == int(L.AIR)].mean()) < -950
    assert float(sim.volumes["native"][sim.labels == int(L.BONE_CORTEX)].mean()) > 400
    # the same through the files (rescale applied)
    e = make_exam(tmp_path, "ct", 2, 0, matrix=64, mvi=True, noise=5.0, vendor="canon", hard_cases="none")
    truth = np.load(tmp_path / e["truth"]["dir"] / "lesions.npy") > 0
    liv = np.load(tmp_path / e["truth"]["dir"] / "liver.npy") > 0
    files = _series_files(tmp_path, e, e["recipes"]["ct_ap_resnet18"]["ct_arterial"])
    vol = np.stack([pydicom.dcmread(f).pixel_array * 1.0 for f in files])
    ds = pydicom.dcmread(files[0])
    hu = vol * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert hu[truth].mean() > hu[liv & ~truth].mean()
    assert float(ds.ContrastBolusStartTime) < float(ds.AcquisitionTime)


def test_mr_signal_by_phase() -> None:
    for agent in ("gd-eob", "extracellular"):
        sim = simulate_exam("mr", 2, 0, matrix=128, mvi=False, agent=agent, noise=0.01)
        tumor = sim.truth > 0
        liver = (sim.labels == int(L.LIVER)) & ~tumor
        mean = {p: (float(v[tumor].mean()), float(v[liver].mean())) for p, v in sim.volumes.items()
                if v.shape == sim.truth.shape}
        assert mean["arterial"][0] > mean["arterial"][1]
        assert mean["portal"][0] < mean["portal"][1] and mean["transitional"][0] < mean["transitional"][1]
        assert mean["pre"][0] < mean["pre"][1]
        if agent == "gd-eob":
            assert mean["hepatobiliary"][0] < 0.6 * mean["hepatobiliary"][1]
        else:
            assert "hepatobiliary" not in sim.volumes


def test_hard_cases_in_headers(tmp_path: Path) -> None:
    e = make_exam(tmp_path / "zh", "ct", 5, 0, matrix=64, language="zh", split_studies=True, missing_agent=True,
                  reformats=True, early_arterial=True, thin=True, annotations="none")
    root = tmp_path / "zh"
    art = e["recipes"]["ct_ap_resnet18"]["ct_arterial"]
    ds = pydicom.dcmread(_series_files(root, e, art)[0])
    assert ds.SpecificCharacterSet == "ISO_IR 192" and "动脉期" in ds.SeriesDescription
    assert "ContrastBolusAgent" not in ds
    studies = set()
    for uid in e["series"]:
        d = pydicom.dcmread(_series_files(root, e, uid)[0], stop_before_pixels=True)
        studies.add(d.StudyInstanceUID)
        assert d.PatientID == e["patient_id"] and d.AccessionNumber == e["accession_number"]
        if "FrameOfReferenceUID" in d:
            assert d.FrameOfReferenceUID == e["frame_of_reference_uid"]
    assert len(studies) >= 2 and studies == set(e["study_instance_uids"])
    assert e["series"][e["early_arterial"]] == "other"
    assert all(e["series"][dup] == "other" and e["series"][src].startswith("ct_")
               for dup, src in e["duplicates"].items())
    types = {tuple(pydicom.dcmread(_series_files(root, e, u)[0], stop_before_pixels=True).ImageType)
             for u in e["series"]}
    assert ("DERIVED", "SECONDARY", "MIP") in types
    assert ("ORIGINAL", "PRIMARY", "LOCALIZER") in types
    # MR: multiphase in one series, opaque descriptions
    m = make_exam(tmp_path / "mp", "mr", 5, 1, matrix=64, vendor="ge", agent="extracellular",
                  multiphase_series=True, opaque_descriptions=True, annotations="seg")
    (uid, phases), = m["phases"].items()
    assert m["series"][uid] == "other"
    assert set(phases.values()) >= {"mr_t1_pre", "mr_arterial", "mr_portal_venous", "mr_transitional"}
    files = _series_files(tmp_path / "mp", m, uid)
    heads = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert {int(d.TemporalPositionIdentifier) for d in heads} == {int(k) for k in phases}
    # GE: one AcquisitionTime, phase offsets in TriggerTime (ms)
    assert len({d.AcquisitionTime for d in heads}) == 1
    trig = {int(d.TemporalPositionIdentifier): float(d.TriggerTime) for d in heads}
    arterial = next(int(k) for k, r in phases.items() if r == "mr_arterial")
    assert 15_000 < trig[arterial] - trig[1] < 100_000
    assert "ContrastBolusAgent" in heads[0] and heads[0].SeriesDescription in ("3D GRE", "3D GRE +C", "Series 3",
                                                                                   "Recon 1", "Ax 3D T1 +C")
    s = make_exam(tmp_path / "sm", "mr", 5, 2, matrix=64, vendor="siemens", agent="gd-eob", multiphase_series=True,
                  annotations="none", hard_cases="none")
    (uid2,) = s["phases"]
    heads = [pydicom.dcmread(f, stop_before_pixels=True) for f in _series_files(tmp_path / "sm", s, uid2)]
    assert "TriggerTime" not in heads[0] and len({d.AcquisitionTime for d in heads}) == len(s["phases"][uid2])
    assert m["recipes"]["mr_3seq_grade"]["mr_t1_pre"].startswith(uid + "#")
    assert m["seg_reference"].startswith(uid + "#")


def test_cli_writes_manifest(tmp_path: Path) -> None:
    from mvi_node.commands.main import main

    assert main(["synth", "mr", "--out", str(tmp_path), "--patients", "1", "--seed", "3", "--matrix", "64",
                 "--agent", "gd-eob", "--annotations", "circle"]) == 0
    doc = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    (s,) = doc["studies"]
    assert {"patient_id", "accession_number", "study_instance_uids", "mvi", "grade", "vendor", "agent", "series",
            "lesions", "clinical", "recipes"} <= set(s)
    assert "annotation" in s["series"].values()
    assert (tmp_path / "clinical" / f"{s['accession_number']}.json").exists()
    for uid in s["series"]:
        assert s["series"][uid] in ROLES
