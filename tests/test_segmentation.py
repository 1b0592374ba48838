"""Automatic liver and tumour segmentation (issue #11, seed 002): the ROI order, the SEG, the
served sliding window, post-processing, the `segment` command, the wider generator realism."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from conftest import free_port, storescu
from mvi_node.infer.registry import DEFAULT_ROOT, ModelRegistry
from mvi_node.synth import make_exam
from test_dispatch import StoreSCP

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: the version the node serves (the highest in models/): what roi_source and the SEG name
SERVED = ModelRegistry([DEFAULT_ROOT]).get("liver_tumor_seg").version
#: an exam without annotation whose lesion the reference model finds (basic phantom, matrix 128)
AUTO = dict(seed=777, index=1, hard_cases="none", matrix=128, annotations="none")


def _walk(ds):
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _walk(item)


def _texts(ds) -> str:
    return " ".join(str(i.TextValue) for i in _walk(ds) if i.ValueType == "TEXT")


def _dciodvfy_errors(path: Path) -> list[str]:
    from mvi_node.report.validate import dciodvfy_errors

    return dciodvfy_errors(path)


def _arterial(manifest: dict) -> str:
    return next(uid for uid, role in manifest["series"].items() if role == "ct_arterial")


@pytest.fixture(scope="module")
def auto_exam(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("auto") / "exam"
    return folder, make_exam(folder, "ct", **AUTO)


# --- the ROI order over DICOM -----------------------------------------------------------
def test_exam_without_annotation_gets_an_automatic_roi_sr_and_seg_over_dicom(node, tmp_path, auto_exam):
    exam, manifest = auto_exam
    pacs = StoreSCP(free_port(), tmp_path / "pacs").start()
    try:
        n = node(quiet=1.0, env={"MVI_DISPATCH__DESTINATIONS": json.dumps([f"PACS@127.0.0.1:{pacs.port}"])})
        storescu(n.port, exam / "dicom", extra=["-R"])
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            got = [dcmread(f, stop_before_pixels=True) for f in pacs.received()]
            if any(str(d.SOPClassUID) == SEG_CLASS for d in got) and any(d.Modality == "SR" for d in got):
                break
            time.sleep(0.5)
        time.sleep(1.0)
        files = pacs.received()
    finally:
        pacs.stop()
    results = {f: dcmread(f) for f in files}
    srs = [d for d in results.values() if d.Modality == "SR"]
    segs = {f: d for f, d in results.items() if str(d.SOPClassUID) == SEG_CLASS}
    assert len(srs) == 1 and len(segs) == 1, [d.Modality for d in results.values()]
    sr = srs[0]
    text = _texts(sr)
    assert f"ROI source: automatic: liver_tumor_seg {SERVED}" in text
    [(seg_path, seg)] = segs.items()
    assert f"DICOM SEG {seg.SOPInstanceUID}" in text
    assert "Not evaluated" not in text

    # the SEG: valid, AUTOMATIC with model version and sha256, in the source study, on the arterial series
    assert not _dciodvfy_errors(seg_path)
    arterial = _arterial(manifest)
    assert str(seg.StudyInstanceUID) in manifest["study_instance_uids"]
    assert [str(s.SeriesInstanceUID) for s in seg.ReferencedSeriesSequence] == [arterial]
    sources = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in (exam / "dicom").rglob("*.dcm")
               if str(dcmread(p, stop_before_pixels=True).SeriesInstanceUID) == arterial}
    refs = {str(r.ReferencedSOPInstanceUID) for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
    assert refs <= sources and refs
    model = tomllib_load(DEFAULT_ROOT / "liver_tumor_seg" / SERVED / "manifest.toml")
    labels = [str(s.SegmentLabel) for s in seg.SegmentSequence]
    assert labels[0] == "Liver" and labels[1].startswith("Lesion 1")
    for s in seg.SegmentSequence:
        assert s.SegmentAlgorithmType == "AUTOMATIC"
        algo = s.SegmentationAlgorithmIdentificationSequence[0]
        assert algo.AlgorithmName == "liver_tumor_seg" and algo.AlgorithmVersion == SERVED
        assert f"sha256={model['variants']['segmentation']['sha256']}" in str(algo.AlgorithmParameters)
    # the SR's lesion and the SEG's lesion 1 are one lesion: one tracking UID
    tracking = [str(i.UID) for i in _walk(sr) if i.ValueType == "UIDREF"
                and i.ConceptNameCodeSequence[0].CodeValue == "112040"]
    assert str(seg.SegmentSequence[1].TrackingUID) in tracking
    for f in files:
        assert not _dciodvfy_errors(f), f

    # `mvi-node infer --json` names the same ROI source
    out = subprocess.run([sys.executable, "-m", "mvi_node", "infer", str(exam / "dicom"), "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    [record] = [r for r in json.loads(out.stdout)["studies"] if r["recipe"] == "ct_ap_resnet18"]
    assert record["roi_source"] == f"automatic: liver_tumor_seg {SERVED}" and record["outcome"] == "ok"
    assert record["segmentation"]["lesions"][0]["volume_ml"] > 0.2


def tomllib_load(path: Path) -> dict:
    import tomllib

    return tomllib.loads(path.read_text(encoding="utf-8"))


def test_annotated_exam_still_uses_its_annotation_and_never_runs_the_segmenter(tmp_path):
    from mvi_node.infer import Engine, ModelRegistry
    from mvi_node.report.outputs import build_results
    from mvi_node.select.engine import select_path

    make_exam(tmp_path / "seg", "ct", seed=777, index=0, hard_cases="none", matrix=128, annotations="seg",
              seg_on="arterial")
    engine = Engine(ModelRegistry([DEFAULT_ROOT]))
    assert "liver_tumor_seg" in [r.name for r, _m in engine.segmentation.segmenters]
    assert engine.segmentation.for_modality("CT")[0].name == "liver_tumor_seg"  # the MR one is liver_tumor_seg_mr
    assert "liver_tumor_seg" not in engine.recipes.names()  # never offered an exam to predict on
    calls = []
    original = engine.segmentation.segment
    engine.segmentation.segment = lambda target: calls.append(1) or original(target)
    [exam] = select_path(tmp_path / "seg" / "dicom")
    [res] = engine.run_exam(exam)
    assert res.outcome == "ok" and res.roi["source"] == "seg" and res.segmentation is None and not calls
    datasets = build_results(res, exam, 0)
    assert [d.Modality for d in datasets] == ["SR"]
    assert "ROI source: automatic" not in _texts(datasets[0])


# --- bad input: no liver, no lesion --------------------------------------------------------
def _constant_model(root: Path, probabilities: tuple[float, float, float], version: str) -> Path:
    """A liver_tumor_seg model folder whose graph answers the same class everywhere."""
    import onnx
    import tomli_w
    from onnx import TensorProto, helper

    from mvi_node.infer.manifest import variant_entry

    folder = root / "liver_tumor_seg" / version
    folder.mkdir(parents=True)
    dims = ["N", 1, "D", "H", "W"]
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    nodes = [helper.make_node("Mul", ["image", "zero"], ["z"])]
    outs = []
    for k, p in enumerate(probabilities):
        nodes.append(helper.make_node("Constant", [], [f"c{k}"],
                                      value=helper.make_tensor(f"v{k}", TensorProto.FLOAT, [], [p])))
        nodes.append(helper.make_node("Add", ["z", f"c{k}"], [f"p{k}"]))
        outs.append(f"p{k}")
    nodes.append(helper.make_node("Concat", outs, ["probabilities"], axis=1))
    graph = helper.make_graph(nodes, "constant", [helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3, "D", "H", "W"])],
                              [zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, folder / "model.onnx")
    manifest = {"recipe": "liver_tumor_seg", "version": version, "intended_use": "tests only",
                "training_data": "none: a constant graph (synthetic tests)",
                "variants": {"segmentation": variant_entry(folder / "model.onnx", 0.5, {}, folder)}}
    (folder / "manifest.toml").write_text(tomli_w.dumps(manifest), encoding="utf-8")
    return root


@pytest.mark.parametrize("probabilities, why", [((1.0, 0.0, 0.0), "no liver found"),
                                                ((0.2, 0.8, 0.0), "no lesion found")])
def test_no_liver_or_no_lesion_gives_a_not_evaluated_sr_and_no_seg(tmp_path, auto_exam, probabilities, why):
    from mvi_node.infer import Engine, ModelRegistry
    from mvi_node.report.outputs import build_results, save_outputs
    from mvi_node.select.engine import select_path

    root = _constant_model(tmp_path / "models", probabilities, "0.0.1")
    (root / "ct_ap_resnet18").mkdir()
    (root / "ct_ap_resnet18" / "0.2.0").symlink_to(DEFAULT_ROOT / "ct_ap_resnet18" / "0.2.0")
    engine = Engine(ModelRegistry([root]))
    exam_dir, _manifest = auto_exam
    [exam] = select_path(exam_dir / "dicom")
    [res] = engine.run_exam(exam)
    assert res.outcome == "no tumour ROI" and res.segmentation is None
    assert any(r.startswith(f"automatic: liver_tumor_seg 0.0.1: {why}") for r in res.reasons), res.reasons
    datasets = build_results(res, exam, 3)
    assert [d.Modality for d in datasets] == ["SR"]  # no empty SEG
    [path] = save_outputs(datasets, tmp_path / "out")
    text = _texts(datasets[0])
    assert "Not evaluated: no tumour ROI" in text and why in text
    assert not _dciodvfy_errors(path)


# --- the served sliding window ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_net(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("monai")
    from monai.networks.nets import UNet

    from mvi_node.recipes.liver_tumor_seg.export import export_onnx

    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8, 16), strides=((1, 2, 2), (2, 2, 2)),
               num_res_units=1).eval()
    path = export_onnx(net, tmp_path_factory.mktemp("onnx") / "tiny.onnx", (8, 32, 32))
    return net, path


@pytest.mark.parametrize("mode, atol", [("constant", 5e-5), ("gaussian", 5e-5)])
def test_numpy_onnx_sliding_window_equals_monai_torch_sliding_window(tiny_net, mode, atol):
    import torch
    from monai.inferers import sliding_window_inference

    from mvi_node.infer.sliding import sliding_window
    from mvi_node.recipes.liver_tumor_seg.evaluate import OrtRunner

    net, path = tiny_net
    runner = OrtRunner(path)
    rng = np.random.default_rng(1)
    for shape in [(6, 45, 70), (13, 40, 33)]:  # shorter than a tile along z (padded), odd sizes, several tiles
        vol = rng.random(shape, dtype=np.float32)
        got, info = sliding_window(vol, lambda t: runner.run("segmentation", {"image": t}, ["probabilities"])[0],
                                   (8, 32, 32), 0.25, mode)
        with torch.no_grad():
            ref = sliding_window_inference(torch.from_numpy(vol[None, None]), (8, 32, 32), 1,
                                           lambda x: torch.softmax(net(x), 1), overlap=0.25, mode=mode)[0].numpy()
        assert got.shape == ref.shape == (3, *shape)
        assert np.abs(got - ref).max() < atol, (shape, mode, float(np.abs(got - ref).max()))
        assert info["patch"] == [8, 32, 32] and not info["fallbacks"]


def test_sliding_window_falls_back_to_smaller_tiles_when_memory_runs_out():
    from mvi_node.infer.sliding import sliding_window

    seen = []

    def tile(t):
        seen.append(t.shape[-3:])
        if t.shape[-1] > 24:
            raise MemoryError("tile too large")
        return np.concatenate([t, 1 - t], axis=1)

    vol = np.random.default_rng(2).random((10, 50, 50), dtype=np.float32)
    out, info = sliding_window(vol, tile, (8, 48, 48), 0.25, "gaussian", multiple=(1, 8, 8))
    assert info["fallbacks"] == [[8, 48, 48]] and info["patch"] == [8, 24, 24]
    assert np.allclose(out[0], vol, atol=1e-5)  # an identity "network" blends back to the input
    # an error that is not about memory is not retried
    with pytest.raises(ValueError):
        sliding_window(vol, lambda t: (_ for _ in ()).throw(ValueError("bad graph")), (8, 48, 48))


def test_the_serving_path_imports_no_torch(auto_exam, tmp_path):
    exam, _ = auto_exam
    code = f"""
import sys
from pathlib import Path
from mvi_node.infer import Engine, ModelRegistry
from mvi_node.report.outputs import build_results
from mvi_node.select.engine import select_path
engine = Engine(ModelRegistry())
[exam] = select_path(Path({str(exam / 'dicom')!r}))
[res] = engine.run_exam(exam)
datasets = build_results(res, exam, 1)
assert res.roi["source"].startswith("automatic"), res.reasons
assert datasets[-1].Modality == "SEG"
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "monai", "onnx"))
print("IMPORTED", bad)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "IMPORTED []" in out.stdout


# --- post-processing -------------------------------------------------------------------
def test_postprocessing_keeps_liver_lesions_ranks_them_and_measures_them():
    from mvi_node.roi.automatic import postprocess
    from mvi_node.roi.geometry import SeriesGeometry

    geo = SeriesGeometry(datasets=[], positions=np.zeros((20, 3)), orientation=np.array([1., 0, 0, 0, 1, 0]),
                         spacing_rc=(1.0, 1.0), shape=(20, 100, 100), frame_uid=None)
    geo.positions[:, 2] = np.arange(20) * 2.0  # 2 mm slices: 2 uL voxels
    z, y, x = np.mgrid[0:20, 0:100, 0:100]
    labels = np.zeros((20, 100, 100), np.uint8)
    labels[(x < 70) & (y < 70)] = 1  # the liver: 70 x 70 x 40 mm = 196 mL
    big = ((x - 30) ** 2 + (y - 30) ** 2 <= 15 ** 2) & (z >= 5) & (z < 15)  # 30 mm across
    small = ((x - 55) ** 2 + (y - 55) ** 2 <= 4 ** 2) & (z >= 8) & (z < 11)  # 9 mm, ~0.3 mL
    tiny = ((x - 10) ** 2 + (y - 60) ** 2 <= 1) & (z == 3)  # 5 voxels: below the minimum size
    outside = ((x - 88) ** 2 + (y - 88) ** 2 <= 6 ** 2) & (z >= 5) & (z < 10)  # not in the liver
    for m in (big, small, tiny, outside):
        labels[m] = 2
    liver, lesions_map, lesions, reasons = postprocess(labels, geo, min_lesion_ml=0.2, min_liver_ml=100)
    assert not reasons and [l.rank for l in lesions] == [1, 2]
    assert lesions[0].volume_ml == pytest.approx(big.sum() * 0.002) and lesions[0].max_diameter_mm == pytest.approx(31, abs=1.5)
    assert lesions[1].volume_ml == pytest.approx(small.sum() * 0.002) and lesions[1].slices == (8, 10)
    assert (lesions_map == 1).sum() == big.sum() and not lesions_map[outside].any() and not lesions_map[tiny].any()
    assert liver.sum() > 0 and not (liver & (lesions_map > 0)).any()
    # no liver, and a liver without lesions, say so
    assert postprocess(np.zeros_like(labels), geo)[3][0].startswith("no liver found")
    only_liver = np.where(labels == 2, 1, labels).astype(np.uint8)
    assert postprocess(only_liver, geo)[3][0].startswith("no lesion found in the liver")


# --- the segment command -----------------------------------------------------------------
def test_segment_command_writes_one_seg_per_exam_and_prints_the_lesions(tmp_path, auto_exam):
    exam, manifest = auto_exam
    out = tmp_path / "segs"
    res = subprocess.run([sys.executable, "-m", "mvi_node", "segment", str(exam / "dicom"), "--out", str(out), "--json"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    [rec] = json.loads(res.stdout)["exams"]
    assert rec["outcome"] == "ok" and rec["series_instance_uid"] == _arterial(manifest)
    assert rec["roi_source"] == f"automatic: liver_tumor_seg {SERVED}" and rec["lesions"]
    assert all(l["volume_ml"] > 0 and l["max_diameter_mm"] > 0 for l in rec["lesions"])
    [seg] = list(out.rglob("*.dcm"))
    assert str(seg) == rec["seg"] and not _dciodvfy_errors(seg)
    text = subprocess.run([sys.executable, "-m", "mvi_node", "segment", str(exam / "dicom"), "--out", str(out)],
                          capture_output=True, text=True)
    assert text.returncode == 0 and "Lesion 1:" in text.stdout and " mL, max diameter " in text.stdout
    assert len(list(out.rglob("*.dcm"))) == 1  # the same SEG again (deterministic UIDs)


# --- wider realism of the generator ----------------------------------------------------------
def test_varied_realism_is_deterministic_keeps_truth_exact_and_leaves_basic_exams_alone():
    from mvi_node.synth import simulate_exam
    from mvi_node.synth.anatomy import L

    basic = simulate_exam("ct", 3, 0, phases=("arterial",), hard_cases="none", matrix=64)
    again = simulate_exam("ct", 3, 0, phases=("arterial",), hard_cases="none", matrix=64, realism="basic")
    varied = simulate_exam("ct", 3, 0, phases=("arterial",), hard_cases="none", matrix=64, realism="varied")
    varied2 = simulate_exam("ct", 3, 0, phases=("arterial",), hard_cases="none", matrix=64, realism="varied")
    assert np.array_equal(basic.volumes["arterial"], again.volumes["arterial"]) and basic.variation is None
    assert np.array_equal(varied.volumes["arterial"], varied2.volumes["arterial"])
    assert not np.array_equal(basic.labels, varied.labels)  # deformed, with more vessels and lobes
    assert varied.truth.any() and set(np.unique(varied.truth)) <= set(range(len(varied.lesions) + 1))
    assert ((varied.labels == int(L.LIVER)) & (varied.truth > 0)).any()  # lesions still in the liver
    assert varied.variation.patterns and len(varied.variation.patterns) == len(varied.lesions)
    with pytest.raises(ValueError, match="realism"):
        simulate_exam("ct", 3, 0, realism="photographic")


# --- the tumour threshold sweep (mvi_node.recipes.liver_tumor_seg.threshold) -------------------
def test_threshold_sweep_runs_the_network_once_and_scores_each_threshold_as_served(auto_exam):
    from mvi_node.infer.manifest import sha256_file
    from mvi_node.recipes.liver_tumor_seg.recipe import LiverTumorSeg
    from mvi_node.recipes.liver_tumor_seg.threshold import sweep
    from mvi_node.recipes.seg_evaluate import OrtRunner, evaluate_exams

    folder, entry = auto_exam
    onnx = DEFAULT_ROOT / "liver_tumor_seg" / SERVED / "model.onnx"
    runner, recipe = OrtRunner(onnx, threads=1), LiverTumorSeg()
    calls = []
    run = runner.run
    runner.run = lambda *a, **k: calls.append(1) or run(*a, **k)
    ident = {"recipe": recipe.name, "model_version": SERVED, "sha256": sha256_file(onnx)}
    rows = sweep(folder, [entry], recipe, runner, ident, thresholds=(0.5, 0.999), log=lambda m: None)
    tiles = len(calls)
    served, _ = evaluate_exams(folder, [entry], recipe, runner, ident, log=lambda m: None)
    assert len(calls) == 2 * tiles  # the sweep ran the window once for both thresholds
    # at the served threshold the sweep scores exactly what the served path scores
    assert rows[0.5][0]["tumour_dice"] == pytest.approx(served[0]["tumour_dice"])
    assert rows[0.5][0]["lesions_found"] == served[0]["lesions_found"] >= 1
    # a stricter threshold keeps no more tumour
    assert (rows[0.999][0]["tumour_dice"] or 0.0) <= rows[0.5][0]["tumour_dice"]


def test_threshold_choice_moves_only_for_a_real_validation_gain_and_a_tie_keeps_the_higher_threshold():
    from mvi_node.recipes.liver_tumor_seg.threshold import choose

    def s(**d):
        return {float(k[1:].replace("_", ".")): {"tumour_dice_mean": v} for k, v in d.items()}

    assert choose(s(t0_3=0.71, t0_5=0.70)) == 0.5  # +0.01: one exam's luck, the served threshold stays
    assert choose(s(t0_2=0.75, t0_3=0.73, t0_5=0.70)) == 0.2  # the best of those that gain enough
    assert choose(s(t0_2=0.73, t0_3=0.73, t0_5=0.70)) == 0.3  # a tie: the higher threshold
    assert choose(s(t0_3=None, t0_5=0.1)) == 0.5
    assert choose(s(t0_3=0.50, t0_4=0.40), served=0.4, margin=0.05) == 0.3


def test_a_lower_tumour_threshold_keeps_a_faint_lesion_the_served_one_drops():
    from mvi_node.recipes.liver_tumor_seg.recipe import LiverTumorSeg
    from mvi_node.roi.geometry import SeriesGeometry

    recipe = LiverTumorSeg()
    shape = (16, 64, 64)  # on the model's own 5 x 2.5 x 2.5 mm grid, so nothing is resampled
    geo = SeriesGeometry(datasets=[], positions=np.zeros((16, 3)), orientation=np.array([1., 0, 0, 0, 1, 0]),
                         spacing_rc=(2.5, 2.5), shape=shape, frame_uid=None)
    geo.positions[:, 2] = np.arange(16) * 5.0
    z, y, x = np.mgrid[0:16, 0:64, 0:64]
    probs = np.zeros((3,) + shape, np.float32)
    probs[0] = 1.0
    liver = (x < 56) & (y < 56) & (z >= 2) & (z < 14)  # 140 x 140 x 60 mm
    probs[:, liver] = np.array([0.2, 0.8, 0.0])[:, None]
    clear = ((x - 15) ** 2 + (y - 15) ** 2 <= 5 ** 2) & (z >= 5) & (z < 9)
    faint = ((x - 40) ** 2 + (y - 40) ** 2 <= 4 ** 2) & (z >= 6) & (z < 9)
    probs[:, clear] = np.array([0.05, 0.25, 0.7])[:, None]
    probs[:, faint] = np.array([0.05, 0.6, 0.35])[:, None]  # the liver is likelier, the tumour still 0.35
    at = {t: recipe.from_probabilities(probs, {}, geo, {"recipe": recipe.name}, t) for t in (0.5, 0.3)}
    assert len(at[0.5].lesions) == 1 and at[0.5].lesion_map[clear].all() and not at[0.5].lesion_map[faint].any()
    assert len(at[0.3].lesions) == 2 and at[0.3].lesion_map[faint].all()
    assert at[0.3].info["tumour_threshold"] == 0.3
