"""Receive -> select -> ROI -> infer -> report -> dispatch, against a real DCMTK storescp."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from conftest import storescu
from mvi_node.synth import make_exam


def _exam(root: Path, name: str, **choices) -> tuple[Path, dict]:
    folder = root / name
    manifest = make_exam(folder, "ct", seed=777, index=choices.pop("index", 0), hard_cases="none", matrix=128, **choices)
    return folder, manifest


def _walk(ds):
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _walk(item)


def _num(sr, meaning: str) -> float:
    for item in _walk(sr):
        if item.ValueType == "NUM" and item.ConceptNameCodeSequence[0].CodeMeaning == meaning:
            return float(item.MeasuredValueSequence[0].NumericValue)
    raise AssertionError(f"no NUM {meaning!r}")


def _texts(sr) -> str:
    return " ".join(str(i.TextValue) for i in _walk(sr) if i.ValueType == "TEXT")


def _valid(path: Path) -> None:
    out = subprocess.run(["/usr/bin/dciodvfy", str(path)], capture_output=True, text=True)
    errors = [l for l in (out.stdout + out.stderr).splitlines() if l.startswith("Error")]
    assert not errors, f"{path.name}: {errors}"


def test_exam_comes_back_as_sr_and_gradcam_scs_in_the_same_study(node, pacs, tmp_path):
    exam, manifest = _exam(tmp_path, "pos", mvi=True, annotations="seg", seg_on="arterial")
    n = node(quiet=1.0, env=pacs.as_destination())
    storescu(n.port, exam, extra=["-R"])
    files = pacs.wait_for(4)
    results = [dcmread(f) for f in files]
    srs = [d for d in results if d.Modality == "SR"]
    scs = [d for d in results if d.Modality != "SR"]
    assert len(srs) == 1 and len(scs) == 3
    study = set(manifest["study_instance_uids"])
    assert all(str(d.StudyInstanceUID) in study for d in results)
    sr = srs[0]
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert "synthetic" in _texts(sr) and "NOT FOR CLINICAL USE" in sr.SeriesDescription

    # the SR's probability equals `mvi-node infer` on the same exam
    infer = subprocess.run([sys.executable, "-m", "mvi_node", "infer", str(exam), "--json"], capture_output=True, text=True)
    assert infer.returncode == 0, infer.stderr
    (record,) = [r for r in json.loads(infer.stdout)["studies"] if r["recipe"] == "ct_ap_resnet18"]
    assert _num(sr, "Microvascular invasion probability") == pytest.approx(record["probability"], abs=1e-6)
    assert _num(sr, "Threshold Value") == pytest.approx(record["threshold"], abs=1e-6)
    finding = [i.ConceptCodeSequence[0].CodeValue for i in _walk(sr) if i.ValueType == "CODE"
               and i.ConceptNameCodeSequence[0].CodeValue == "121071"]
    assert ("372287009" if record["predicted_mvi"] else "127494000") in finding

    sources = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in exam.rglob("*.dcm")}
    for sc in scs:
        assert sc.BurnedInAnnotation == "YES" and sc.PhotometricInterpretation == "RGB" and sc.BitsAllocated == 8
        assert str(sc.SourceImageSequence[0].ReferencedSOPInstanceUID) in sources
        assert sc.BodyPartExamined and sc.PixelSpacing
    for f in files:
        _valid(f)
    html = subprocess.run(["/usr/bin/dsr2html", str(next(f for f in files if dcmread(f).Modality == "SR"))],
                          capture_output=True, text=True)
    assert html.returncode == 0 and "vascular invasion by tumor" in html.stdout and "NOT FOR CLINICAL USE" in html.stdout

    # a retried job makes the same objects: PACS still holds one SR and three SCs
    job = next(j for j in n.status_jobs() if j["kind"] == "study")
    subprocess.run([sys.executable, "-m", "mvi_node", "dispatch", "retry", str(job["id"]), "--data-dir", str(n.data_dir)], check=True)
    time.sleep(4)
    assert len(pacs.received()) == 4


def test_no_arterial_phase_and_no_roi_each_get_an_explanatory_sr(node, pacs, tmp_path):
    no_roi, _ = _exam(tmp_path, "noroi", index=1, annotations="none")
    no_art, manifest = _exam(tmp_path, "noart", index=2, annotations="seg", seg_on="portal")
    for uid, role in manifest["series"].items():
        if role in ("ct_arterial",) or uid == manifest.get("early_arterial"):
            for f in no_art.rglob("*.dcm"):
                if str(dcmread(f, stop_before_pixels=True).SeriesInstanceUID) == uid:
                    f.unlink()
    # the automatic segmentation pinned away: this exam stays without any ROI (test_segmentation
    # sends one with the segmentation served)
    n = node(quiet=1.0, env={**pacs.as_destination(),
                             "MVI_MODELS__PINS": json.dumps({"liver_tumor_seg": "none"})})
    storescu(n.port, no_roi, extra=["-R"])
    storescu(n.port, no_art, extra=["-R"])
    files = pacs.wait_for(2)
    srs = [dcmread(f) for f in files]
    assert len(srs) == 2 and all(d.Modality == "SR" for d in srs)
    said = sorted(_texts(d) for d in srs)
    assert any("no tumour ROI" in t for t in said)
    assert any("no eligible series" in t for t in said)
    for f in files:
        _valid(f)
