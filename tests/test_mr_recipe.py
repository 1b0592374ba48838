"""Seed 001's recipe mr_3seq_grade (issue #12): crops, nomogram, graph, calibration,
and MR exams served end to end over DICOM."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mvi_node.recipes.mr_3seq_grade import crops as cr
from mvi_node.recipes.mr_3seq_grade.recipe import NOMOGRAM, nomogram_probability


# --- inputs ---------------------------------------------------------------------------
def test_key_slices_are_the_maximum_diameter_and_its_neighbours_inside_the_volume():
    mask = np.zeros((10, 64, 64), bool)
    for z, r in ((3, 4), (4, 9), (5, 6)):
        yy, xx = np.mgrid[:64, :64]
        mask[z] = (yy - 32) ** 2 + (xx - 32) ** 2 <= r * r
    assert cr.key_slices(mask, (1.0, 1.0)) == (3, 4, 5)
    edge = np.zeros_like(mask)
    edge[0, 30:40, 30:40] = True
    assert cr.key_slices(edge, (1.0, 1.0)) == (0, 1, 2)
    edge[:] = False
    edge[9, 30:40, 30:40] = True
    assert cr.key_slices(edge, (1.0, 1.0)) == (7, 8, 9)
    with pytest.raises(ValueError):
        cr.key_slices(np.zeros_like(mask), (1.0, 1.0))


def test_roi_box_is_the_rectangle_plus_margin_and_the_crop_shows_exactly_it():
    mask = np.zeros((3, 100, 120), bool)
    mask[1, 40:60, 30:70] = True  # 20 rows x 40 cols
    box = cr.roi_box(mask, (0, 1, 2), margin_px=8)
    assert (box.edge_rows, box.edge_cols) == (36.0, 56.0)
    assert (box.center_row, box.center_col) == (50.0, 50.0)
    plane = np.zeros((100, 120), np.float32)
    plane[40:60, 30:70] = 200.0
    crop = cr.crop_resize(plane, box)
    assert crop.shape == (320, 320)
    # the tumour fills the box less the margin: rows 8/36 .. 28/36 of the crop, cols 8/56 .. 48/56
    rows = np.flatnonzero(crop[:, 160] > 100)
    cols = np.flatnonzero(crop[160] > 100)
    assert abs(rows[0] - 320 * 8 / 36) <= 6 and abs(rows[-1] - 320 * 28 / 36) <= 6
    assert abs(cols[0] - 320 * 8 / 56) <= 6 and abs(cols[-1] - 320 * 48 / 56) <= 6


def test_nomogram_is_the_papers_logistic_model():
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    assert nomogram_probability(10.0, False) == pytest.approx(sig(-3.51))
    assert nomogram_probability(20.0, True) == pytest.approx(sig(-3.51 + 3.58))  # 20 is not > 20
    assert nomogram_probability(20.5, True) == pytest.approx(sig(-3.51 + 1.53 + 3.58))
    assert nomogram_probability(400.0, False) == pytest.approx(sig(-3.51 + 1.53))
    assert NOMOGRAM["afp_cut_ng_ml"] == 20.0


def test_calibration_rescales_grade_probabilities_to_the_calibrated_mvi_probability():
    from mvi_node.infer.calibration import Calibration
    from mvi_node.infer.engine import calibrated
    from mvi_node.infer.recipe import Finding, Prediction

    cal = Calibration.from_manifest({"method": "platt", "a": 2.0, "b": -1.0, "on_logit": True}, "test")
    grades = {"M0": 0.4, "M1": 0.45, "M2": 0.15}
    f = Finding("Tumor 1", 0.6, True, class_probabilities=grades)
    pred = Prediction(0.6, 0.5, True, (f,), "1.2.3", "image_only", class_probabilities=grades)
    out = calibrated(pred, cal)
    p = float(cal.apply(0.6))
    for got in (out.class_probabilities, out.findings[0].class_probabilities):
        assert got["M0"] == pytest.approx(1 - p, abs=1e-6)
        assert got["M1"] + got["M2"] == pytest.approx(p, abs=1e-5)
        assert got["M1"] / got["M2"] == pytest.approx(3.0, rel=1e-4)
    assert out.raw_probability == 0.6 and out.probability == pytest.approx(p)


# --- the graph ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_graph(tmp_path_factory):
    """A randomly initialised net with one block per stage, exported as the recipe does."""
    torch = pytest.importorskip("torch")
    from mvi_node.recipes.mr_3seq_grade.export import export_onnx
    from mvi_node.recipes.mr_3seq_grade.network import ThreeSequenceNet

    torch.manual_seed(0)
    net = ThreeSequenceNet(blocks=(1, 1)).eval()
    with torch.no_grad():
        for m in net.modules():  # non-trivial BN so every path matters
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.running_mean.uniform_(-0.1, 0.1)
        net.fc.weight.normal_(0, 0.05)
    path = export_onnx(net, tmp_path_factory.mktemp("mr") / "model.onnx")
    return net, path


def test_exported_graph_gives_grade_probabilities_mvi_probability_and_a_map_per_branch(tiny_graph):
    import onnxruntime as ort
    import torch

    from mvi_node.recipes.mr_3seq_grade.network import ExportModule

    net, path = tiny_graph
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    feeds = {n: rng.random((2, 3, 320, 320), dtype=np.float32) for n in ("t1_pre", "portal_venous", "transitional")}
    classes, prob, cams = sess.run(["class_probabilities", "probability", "gradcam"], feeds)
    assert classes.shape == (2, 3) and prob.shape == (2,) and cams.shape == (2, 3, 320, 320)
    assert np.allclose(classes.sum(1), 1.0, atol=1e-5)
    assert np.allclose(prob, classes[:, 1] + classes[:, 2], atol=1e-6)
    assert cams.min() >= 0.0 and cams.max() <= 1.0 + 1e-6
    with torch.no_grad():
        ref = ExportModule(net)(*[torch.from_numpy(v) for v in feeds.values()])
    assert np.allclose(classes, ref[0].numpy(), atol=1e-4)
    assert np.allclose(cams, ref[2].numpy(), atol=1e-3)
    # each branch's map follows its own sequence: changing only one input changes only its map
    moved = dict(feeds, transitional=np.roll(feeds["transitional"], 60, axis=3))
    cams2 = sess.run(["gradcam"], moved)[0]
    assert np.allclose(cams2[:, :2], cams[:, :2], atol=1e-5) and not np.allclose(cams2[:, 2], cams[:, 2], atol=1e-2)
    # the probability averages the 27 slice combinations: permuting one sequence's slices keeps it
    perm = dict(feeds, t1_pre=feeds["t1_pre"][:, ::-1].copy())
    assert np.allclose(sess.run(["class_probabilities"], perm)[0], classes, atol=1e-5)


# --- served end to end ------------------------------------------------------------------
from conftest import storescu  # noqa: E402

from mvi_node.synth import make_exam  # noqa: E402

GRADE_NAMES = [f"Probability of MVI grade {g}" for g in ("M0", "M1", "M2")]


def _walk(ds):
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _walk(item)


def _nums(sr) -> dict[str, float]:
    return {str(i.ConceptNameCodeSequence[0].CodeMeaning): float(i.MeasuredValueSequence[0].NumericValue)
            for i in _walk(sr) if i.ValueType == "NUM"}


def _texts(sr) -> str:
    return " ".join(str(i.TextValue) for i in _walk(sr) if i.ValueType == "TEXT")


def _valid(path: Path) -> None:
    out = subprocess.run(["/usr/bin/dciodvfy", str(path)], capture_output=True, text=True)
    errors = [l for l in (out.stdout + out.stderr).splitlines() if l.startswith("Error")]
    assert not errors, f"{path.name}: {errors}"


def _series_of_role(folder: Path, manifest: dict, role: str) -> list[Path]:
    from pydicom import dcmread

    uids = {uid for uid, r in manifest["series"].items() if r == role}
    return [p for p in folder.rglob("*.dcm") if str(dcmread(p, stop_before_pixels=True).SeriesInstanceUID) in uids]


def _infer(path: Path, *extra: str) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "mvi_node", "infer", str(path), "--json", *extra],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["studies"]


@pytest.fixture(scope="module")
def mr_exams(tmp_path_factory):
    """Three MR exams (no hard cases, gadoxetate): whole, without the transitional phase,
    and with a transitional phase from another frame of reference whose image is noise
    (registration runs, and fails its quality check)."""
    import pydicom
    from pydicom.uid import generate_uid

    root = tmp_path_factory.mktemp("mr_exams")
    out = {}
    for i, name in enumerate(("whole", "missing", "misregistered")):
        folder = root / name
        out[name] = (folder, make_exam(folder / "dicom", "mr", seed=4242, index=i, hard_cases="none", matrix=128,
                                       agent="gd-eob", mvi=True, annotations="seg", seg_on="portal"))
    folder, manifest = out["missing"]
    for p in _series_of_role(folder, manifest, "mr_transitional"):
        p.unlink()
    folder, manifest = out["misregistered"]
    frame, rng = generate_uid(), np.random.default_rng(0)
    for p in _series_of_role(folder, manifest, "mr_transitional"):
        ds = pydicom.dcmread(p)
        ds.FrameOfReferenceUID = frame
        noise = rng.integers(0, 800, ds.pixel_array.shape).astype(ds.pixel_array.dtype)
        ds.PixelData = noise.tobytes()
        ds.save_as(p)
    return out


def test_mr_exams_sent_over_dicom_come_back_as_graded_srs_and_one_capture_per_sequence(node, pacs, mr_exams, tmp_path):
    from pydicom import dcmread

    folder, manifest = mr_exams["whole"]
    clinical = tmp_path / "clinical"
    clinical.mkdir()
    (clinical / f"{manifest['accession_number']}.json").write_text(json.dumps(
        {"accession_number": manifest["accession_number"], "afp_ng_ml": 85.0}))
    n = node(quiet=1.0, env={**pacs.as_destination(),
                             "MVI_CLINICAL__SOURCE": str(clinical)})
    for name in ("whole", "missing", "misregistered"):
        storescu(n.port, mr_exams[name][0] / "dicom", extra=["-R"])
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        results = [dcmread(f) for f in pacs.received()]
        if sum(d.Modality == "SR" for d in results) >= 3 and sum(d.Modality != "SR" for d in results) >= 3:
            break
        time.sleep(0.5)
    time.sleep(1.0)
    files = pacs.received()
    results = {f: dcmread(f) for f in files}
    by_study = {}
    for f, d in results.items():
        by_study.setdefault(str(d.StudyInstanceUID), []).append((f, d))

    # the whole exam: SR with the MR procedure, P(M0..M2), P(MVI), the nomogram; three captures
    (whole_study,) = manifest["study_instance_uids"]
    srs = [d for _, d in by_study[whole_study] if d.Modality == "SR"]
    scs = [d for _, d in by_study[whole_study] if d.Modality != "SR"]
    assert len(srs) == 1 and len(scs) == 3
    sr = srs[0]
    codes = {(str(i.ConceptCodeSequence[0].CodeValue), str(i.ConceptCodeSequence[0].CodingSchemeDesignator))
             for i in _walk(sr) if i.ValueType == "CODE"}
    assert ("25056-3", "LN") in codes and ("25045-6", "LN") not in codes
    nums = _nums(sr)
    grades = [nums[g] for g in GRADE_NAMES]
    assert sum(grades) == pytest.approx(1.0, abs=1e-4)
    assert nums["Microvascular invasion probability"] == pytest.approx(grades[1] + grades[2], abs=1e-4)
    present = nums["Microvascular invasion probability"] >= nums["Threshold Value"]
    assert nums["MVI nomogram probability"] == pytest.approx(nomogram_probability(85.0, present), abs=1e-5)
    assert "nomogram" in _texts(sr) and "synthetic" in _texts(sr)
    algorithms = {str(i.TextValue) for i in _walk(sr) if i.ValueType == "TEXT"
                  and i.ConceptNameCodeSequence[0].CodeMeaning == "Algorithm Name"}
    assert "mr_3seq_grade" in algorithms
    series_role = manifest["series"]
    sources = {}
    for p in folder.rglob("*.dcm"):
        ds = dcmread(p, stop_before_pixels=True)
        sources[str(ds.SOPInstanceUID)] = series_role.get(str(ds.SeriesInstanceUID))
    captured = sorted(sources[str(sc.SourceImageSequence[0].ReferencedSOPInstanceUID)] for sc in scs)
    assert captured == ["mr_portal_venous", "mr_t1_pre", "mr_transitional"]
    for f, _d in by_study[whole_study]:
        _valid(f)

    # the SR's probability is what `mvi-node infer` says, under the recipe's name
    (record,) = [r for r in _infer(folder / "dicom") if r["recipe"] == "mr_3seq_grade"]
    assert record["probability"] == pytest.approx(nums["Microvascular invasion probability"], abs=1e-5)

    # a missing sequence: an SR that names it, no capture
    (missing_study,) = mr_exams["missing"][1]["study_instance_uids"]
    kinds = [d.Modality for _, d in by_study[missing_study]]
    assert kinds == ["SR"]
    text = _texts(by_study[missing_study][0][1])
    assert "mr_transitional" in text and "mr_3seq_grade" in text
    _valid(by_study[missing_study][0][0])

    # a registration that fails its quality check: an SR that says so, no guessed input
    (mis_study,) = mr_exams["misregistered"][1]["study_instance_uids"]
    assert [d.Modality for _, d in by_study[mis_study]] == ["SR"]
    text = _texts(by_study[mis_study][0][1])
    assert "registration" in text and "mr_transitional" in text
    _valid(by_study[mis_study][0][0])


def test_an_exam_with_ct_and_mr_runs_every_recipe_it_qualifies_for(tmp_path):
    import pydicom

    ct = make_exam(tmp_path / "exam" / "ct", "ct", seed=777, index=0, hard_cases="none", matrix=128,
                   annotations="seg", seg_on="arterial")
    make_exam(tmp_path / "exam" / "mr", "mr", seed=4242, index=0, hard_cases="none", matrix=128, agent="gd-eob",
              annotations="seg", seg_on="portal")
    for p in (tmp_path / "exam" / "mr").rglob("*.dcm"):  # one patient, one accession: one exam
        ds = pydicom.dcmread(p)
        ds.PatientID, ds.AccessionNumber = ct["patient_id"], ct["accession_number"]
        ds.save_as(p)
    records = _infer(tmp_path / "exam")
    ran = {r["recipe"]: r for r in records if r.get("outcome") == "ok"}
    assert {"ct_ap_resnet18", "mr_3seq_grade"} <= set(ran)
    assert 0.0 <= ran["mr_3seq_grade"]["probability"] <= 1.0
