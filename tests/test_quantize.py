"""Reduced-precision serving: provider and precision choice, the accuracy check, fp32 fallback.

A small synthetic cohort runs through the serving path once; the shipped ct_ap_resnet18
image-only graph gets an int8 copy (calibrated on that cohort's crops), a fp16 copy and
a deliberately broken int8 copy (weight scales off by 40 %), each in a model folder of
its own next to the fp32 graph, and the accuracy check and the engine run on them.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from mvi_node.infer import accuracy
from mvi_node.infer.precision import choose_precision, device_of, pick_providers, provider_options, run_bound
from mvi_node.infer.registry import DEFAULT_ROOT

pytest.importorskip("onnx")
SHIPPED = DEFAULT_ROOT / "ct_ap_resnet18" / "0.2.0"
VARIANT = "image_only"


# --- provider choice (no GPU on this machine: the logic, with the offered lists) ------------
def test_gpu_providers_are_chosen_when_present_in_the_configured_order():
    trt, cuda, cpu = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
    assert pick_providers(available=[cpu, cuda, trt, "AzureExecutionProvider"]) == [trt, cuda, cpu]
    assert pick_providers(available=[cpu, cuda]) == [cuda, cpu]
    assert pick_providers(available=[cpu, "AzureExecutionProvider"]) == [cpu]
    assert pick_providers([cuda], available=[cpu, cuda]) == [cuda, cpu]  # CPU always last resort
    assert pick_providers([cuda, trt], available=[cpu, cuda, trt]) == [cuda, trt, cpu]  # the site's order
    assert device_of([trt, cuda, cpu]) == "cuda" and device_of([cuda, cpu]) == "cuda" and device_of([cpu]) == "cpu"
    assert pick_providers() == ["CPUExecutionProvider"]  # what this machine's onnxruntime offers
    opts = provider_options([trt, cuda, cpu], "fp16", "/tmp/trt")
    assert opts[0]["trt_fp16_enable"] == "1" and opts[0]["trt_engine_cache_path"] == "/tmp/trt" and opts[1:] == [{}, {}]
    assert provider_options([trt], "fp32")[0]["trt_fp16_enable"] == "0"


class _P:
    def __init__(self, passed: bool, speedup: float = 2.0) -> None:
        self.passed, self.check = passed, {"passed": passed, "speedup_vs_fp32": speedup}


class _V:
    def __init__(self, **precisions) -> None:
        self.precisions = precisions


def test_precision_choice_fastest_that_passed_a_pin_or_fp32():
    cpu, cuda, trt = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
    both = _V(int8=_P(True, 3.4), fp16=_P(True, 1.5))
    assert choose_precision(both, "auto", cpu)[0] == "int8"
    assert choose_precision(both, "auto", cuda)[0] == "fp16"  # CUDA's EP runs QDQ int8 as fp32 kernels
    assert choose_precision(both, "auto", trt)[0] == "fp16"  # the CPU's uint8 Q/DQ is not TensorRT's int8
    assert choose_precision(_V(int8=_P(True, 1.2), fp16=_P(True, 1.9)), "auto", cpu)[0] == "fp16"  # measured
    assert choose_precision(_V(fp16=_P(True, 0.8)), "auto", cpu)[0] == "fp32"  # slower than fp32 here
    assert choose_precision(_V(fp16=_P(True, 1.1)), "auto", cpu)[0] == "fp32"  # within the timing noise
    precision, why = choose_precision(_V(int8=_P(False, 3.4)), "auto", cpu)
    assert precision == "fp32" and "failed: int8" in why
    assert choose_precision(_V(), "auto", cpu)[0] == "fp32"
    assert choose_precision(both, "fp32", cpu)[0] == "fp32"
    assert choose_precision(both, "fp16", cpu)[0] == "fp16"
    precision, why = choose_precision(_V(int8=_P(False)), "int8", cpu)
    assert precision == "fp32" and "check failed" in why
    assert choose_precision(_V(), "bf16", cpu)[0] == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        choose_precision(both, "int4", cpu)


def test_io_binding_run_gives_the_plain_run_outputs():
    import onnxruntime as ort

    sess = ort.InferenceSession(str(SHIPPED / "model_image_only.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((2, 3, 256, 256), dtype=np.float32)
    plain = sess.run(["probability", "gradcam"], {"image": x})
    bound = run_bound(sess, {"image": x}, ["probability", "gradcam"], device="cpu")
    for a, b in zip(plain, bound):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# --- the check's arithmetic ---------------------------------------------------------------
def test_check_figures_on_known_predictions():
    from mvi_node.infer.recipe import Finding, KeySlice, Prediction

    rng = np.random.default_rng(1)

    def pred(p: float, maps: list[np.ndarray]) -> Prediction:
        slices = tuple(KeySlice(f"1.2.{i}", i, p, None, m) for i, m in enumerate(maps))
        return Prediction(p, 0.5, p >= 0.5, (Finding("Tumor 1", p, p >= 0.5, key_slices=slices),), "1.2", VARIANT)

    maps = [[rng.random((8, 8)) for _ in range(3)] for _ in range(12)]
    labels = [i % 2 for i in range(12)]
    ref = [pred(0.2 + 0.5 * y + 0.01 * i, m) for i, (y, m) in enumerate(zip(labels, maps))]
    same = accuracy.check_predictions([(y, a, a) for y, a in zip(labels, ref)])
    assert same["passed"] and same["auc"] == same["auc_fp32"] == 1.0 and same["gradcam_correlation_min"] == 1.0
    noisy = [pred(a.probability + 0.05, [m + rng.normal(0, 0.3, m.shape) for m in mm]) for a, mm in zip(ref, maps)]
    bad = accuracy.check_predictions([(y, a, b) for y, a, b in zip(labels, ref, noisy)])
    assert not bad["passed"] and bad["probability_delta_max"] == pytest.approx(0.05, abs=1e-3)
    assert any("Grad-CAM" in f for f in bad["failures"]) and any("probability" in f for f in bad["failures"])
    few = accuracy.check_predictions([(y, a, a) for y, a in zip(labels[:4], ref[:4])])
    assert not few["passed"] and "need 10" in few["failures"][0]
    assert accuracy.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert accuracy.dice(np.ones(4, bool), np.array([1, 1, 0, 0], bool)) == pytest.approx(2 / 3)


def test_segmentation_check_is_dice_against_the_fp32_masks():
    from types import SimpleNamespace

    liver = np.zeros((4, 16, 16), bool)
    liver[:, 2:14, 2:14] = True
    lesion = np.zeros((4, 16, 16), np.uint16)
    lesion[1:3, 5:9, 5:9] = 1

    def seg(lv, ls):
        return SimpleNamespace(liver=lv, lesion_map=ls, lesions=[1] if ls.any() else [])

    same = accuracy.check_segmentations([(seg(liver, lesion), seg(liver, lesion))] * 10)
    assert same["passed"] and same["liver_dice_min"] == 1.0 and same["tumour_dice_mean"] == 1.0
    shifted = np.roll(lesion, 2, axis=2)  # half the lesion moved: Dice 0.5
    bad = accuracy.check_segmentations([(seg(liver, lesion), seg(liver, shifted))] * 10)
    assert not bad["passed"] and bad["tumour_dice_mean"] == pytest.approx(0.5) and "tumour Dice" in bad["failures"][0]


def test_head_nodes_are_the_ones_after_the_last_conv_and_batches_are_equal():
    import onnx

    from mvi_node.infer.quantize import batches, head_nodes

    graph = onnx.load(str(SHIPPED / "model_image_only.onnx")).graph
    head = set(head_nodes(graph))
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    assert not head & set(convs) and "/fc/Gemm" in head and "/Einsum" in head and "/Resize" in head
    assert "/layer4/layer4.1/Add" in head and "/layer4/layer4.0/Add" not in head  # a conv follows that one
    feeds = [{"image": np.zeros((n, 3), np.float32)} for n in (5, 7, 3)]
    assert [b["image"].shape[0] for b in batches(feeds, 4)] == [4, 4, 4]
    assert [b["image"].shape[0] for b in batches(feeds[:1], 8)] == [5]


# --- real graphs over a real cohort --------------------------------------------------------
@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """(cohort, engine, recipe, model, prepared exams): 10 synthetic CT exams through the serving path."""
    from mvi_node.cohort import open_cohort
    from mvi_node.commands.evaluate import served_engine
    from mvi_node.commands.quantize import _prepared
    from mvi_node.synth import generate_ct

    folder = tmp_path_factory.mktemp("qcohort")
    generate_ct(folder, 10, 300, matrix=128, hard_cases="none", annotations="seg", seg_on="arterial")
    c = open_cohort(folder)
    engine, recipe, model = served_engine("ct_ap_resnet18@0.2.0", [DEFAULT_ROOT], providers=["CPUExecutionProvider"])
    engine.precision = "fp32"
    prepared = list(_prepared(c, engine, recipe, False, lambda rows: rows))
    assert len(prepared) == 10
    labels = [row.labels.get("mvi") for row, _p in prepared]
    assert 0 < sum(labels) < 10, labels  # the AUC needs both classes
    return c, engine, recipe, model, prepared


@pytest.fixture(scope="module")
def folders(cohort, tmp_path_factory):
    """Model folders: int8 (calibrated on the cohort), fp16, broken int8; checks pending."""
    import onnx
    from onnx import numpy_helper

    from mvi_node.infer import quantize as q
    from mvi_node.infer.engine import _Runner
    from mvi_node.infer.manifest import sha256_file

    _c, engine, recipe, model, prepared = cohort
    recorder = q.FeedRecorder(_Runner(engine, model), limit=48)
    for _row, p in prepared:
        recipe.predict(p, recorder)
    root = tmp_path_factory.mktemp("qmodels")
    src = SHIPPED / "model_image_only.onnx"
    made = {}
    work = root / "work"
    work.mkdir()
    q.quantize_int8(src, work / "int8.onnx", q.batches(recorder.feeds[VARIANT], 16))
    q.convert_fp16(src, work / "fp16.onnx")
    broken = onnx.load(str(work / "int8.onnx"))
    for init in broken.graph.initializer:  # every per-channel weight scale 40 % off
        if init.name.endswith("_scale") and len(init.dims) == 1 and init.dims[0] > 1:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(1.4), init.name))
    onnx.save(broken, str(work / "broken.onnx"))
    for name, file, precision in (("int8", "int8.onnx", "int8"), ("fp16", "fp16.onnx", "fp16"),
                                  ("broken", "broken.onnx", "int8")):
        folder = root / name / "ct_ap_resnet18" / "9.0.0"
        folder.mkdir(parents=True)
        manifest = tomllib.loads((SHIPPED / "manifest.toml").read_text(encoding="utf-8"))
        manifest["version"] = "9.0.0"
        for entry in manifest["variants"].values():
            (folder / entry["file"]).symlink_to(SHIPPED / entry["file"])
        shutil.copy(work / file, folder / f"model_image_only.{precision}.onnx")
        manifest["variants"][VARIANT]["precisions"] = {precision: {
            "file": f"model_image_only.{precision}.onnx", "sha256": sha256_file(folder / f"model_image_only.{precision}.onnx"),
            "check": {"passed": False, "pending": "not run", "speedup_vs_fp32": 3.0}}}
        (folder / "manifest.toml").write_text(tomli_w.dumps(manifest), encoding="utf-8")
        made[name] = (folder, precision)
    return made


_REFERENCE: dict[int, list] = {}


def _check(cohort, folder: Path, precision: str) -> dict:
    """The accuracy check of ``precision`` in ``folder`` over the cohort (fp32 predicted once)."""
    from mvi_node.commands.quantize import _outcome
    from mvi_node.infer import load_model
    from mvi_node.infer.engine import _Runner

    _c, engine, recipe, _model, prepared = cohort
    new = load_model(folder)
    if id(cohort) not in _REFERENCE:
        _REFERENCE[id(cohort)] = [_outcome(recipe, p, _Runner(engine, new, "fp32"), new, {}, VARIANT)
                                  for _row, p in prepared]
    pairs = [(row.labels.get("mvi"), a, _outcome(recipe, p, _Runner(engine, new, precision), new, {}, VARIANT))
             for (row, p), a in zip(prepared, _REFERENCE[id(cohort)])]
    return accuracy.check_predictions(pairs)


def test_the_check_refuses_a_broken_quantised_graph_and_passes_fp16(cohort, folders):
    broken = _check(cohort, *folders["broken"])
    assert not broken["passed"], broken
    assert broken["failures"] and broken["exams"] == 10
    fp16 = _check(cohort, *folders["fp16"])
    assert fp16["passed"], fp16
    assert fp16["probability_delta_max"] < 0.005 and fp16["gradcam_correlation_min"] > 0.99
    # the honest int8 copy is far closer to fp32 than the broken one
    int8 = _check(cohort, *folders["int8"])
    assert int8["probability_delta_max"] < broken["probability_delta_max"]
    assert int8["gradcam_correlation_mean"] > broken["gradcam_correlation_mean"]


def _mark(folder: Path, precision: str, passed: bool) -> None:
    path = folder / "manifest.toml"
    m = tomllib.loads(path.read_text(encoding="utf-8"))
    m["variants"][VARIANT]["precisions"][precision]["check"].update(passed=passed, pending="")
    path.write_text(tomli_w.dumps(m), encoding="utf-8")


def test_node_serves_fp32_when_no_copy_passed_and_the_copy_that_did_with_its_sha256(cohort, folders, tmp_path):
    from mvi_node.infer import Engine, ModelRegistry
    from mvi_node.infer.manifest import sha256_file
    from mvi_node.report.outputs import build_results
    from mvi_node.select.engine import select_path

    c, _engine, _recipe, _model, _prepared = cohort
    folder, precision = folders["broken"]
    _mark(folder, precision, False)
    pins = {"liver_tumor_seg": "none", "ct_ap_resnet18": "9.0.0"}
    [exam] = select_path(c.rows[1].path)
    fp32_sha = sha256_file(SHIPPED / "model_image_only.onnx")
    engine = Engine(ModelRegistry([folder.parents[1]], pins=pins))
    [res] = engine.run_exam(exam)
    assert res.outcome == "ok" and res.prediction.variant == VARIANT
    assert res.model["precision"] == "fp32" and res.model["sha256"] == fp32_sha
    sr = build_results(res, exam, 1)[0]
    assert "precision=" not in str(sr) and fp32_sha in str(sr)

    folder, precision = folders["int8"]
    _mark(folder, precision, True)
    engine = Engine(ModelRegistry([folder.parents[1]], pins=pins))
    [res8] = engine.run_exam(exam)
    int8_sha = sha256_file(folder / "model_image_only.int8.onnx")
    assert res8.model["precision"] == "int8" and res8.model["sha256"] == int8_sha != fp32_sha
    sr8, *captures = build_results(res8, exam, 1)
    assert "precision=int8" in str(sr8) and int8_sha in str(sr8)
    assert sr8.SOPInstanceUID != sr.SOPInstanceUID  # another graph is another algorithm: new UIDs
    assert "image_only, int8" in str(sr8) and captures  # Contributing Equipment: software versions
    assert res8.probability == pytest.approx(res.probability, abs=0.1)
    assert res8.as_dict()["model_precision"] == "int8" and res8.as_dict()["model_sha256"] == int8_sha
    # a site pinning fp32 gets fp32 even though int8 passed
    pinned = Engine(ModelRegistry([folder.parents[1]], pins=pins), precision="fp32")
    assert pinned.run_exam(exam)[0].model["sha256"] == fp32_sha
    with pytest.raises(ValueError, match="precision must be one of"):
        Engine(ModelRegistry([folder.parents[1]], pins=pins), precision="int4")


def test_a_precision_copy_with_another_sha256_or_other_outputs_is_refused(folders, tmp_path):
    from mvi_node.infer import ManifestError, load_model

    folder, precision = folders["int8"]
    copy = tmp_path / "m"
    shutil.copytree(folder, copy, symlinks=True)
    m = tomllib.loads((copy / "manifest.toml").read_text(encoding="utf-8"))
    m["variants"][VARIANT]["precisions"][precision]["sha256"] = "0" * 64
    (copy / "manifest.toml").write_text(tomli_w.dumps(m), encoding="utf-8")
    with pytest.raises(ManifestError, match="precision int8: sha256"):
        load_model(copy)
    m["variants"][VARIANT]["precisions"][precision].update(
        file="model.onnx", sha256=tomllib.loads((SHIPPED / "manifest.toml").read_text())["variants"]["clinical"]["sha256"])
    (copy / "manifest.toml").write_text(tomli_w.dumps(m), encoding="utf-8")
    with pytest.raises(ManifestError, match="differ from the fp32 graph"):
        load_model(copy)


def test_gpu_bench_exits_cleanly_without_a_gpu():
    import subprocess
    import sys

    import onnxruntime as ort

    if any(p in ort.get_available_providers() for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")):
        pytest.skip("a GPU provider is installed: bench/gpu.py would measure")
    bench = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"
    proc = subprocess.run([sys.executable, str(bench), "--batches", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "no GPU execution provider" in proc.stderr and not proc.stdout.strip()


def test_quantize_command_writes_a_verified_folder_with_the_check(cohort, tmp_path, capsys):
    """The whole command on the small cohort (fp16 only, to stay quick): a new version
    folder, the fp32 graphs unchanged, each copy listed with its sha256 and check."""
    import json

    from mvi_node.commands.main import main
    from mvi_node.infer import load_model

    c = cohort[0]
    out = tmp_path / "ct_ap_resnet18" / "0.2.0-fp16"
    assert main(["quantize", "--model", "ct_ap_resnet18@0.2.0", "--calibration", str(c.location),
                 "--validation", str(c.location), "--out", str(out), "--version", "0.2.0-fp16",
                 "--precisions", "fp16", "--samples", "16", "--reps", "1", "--rounds", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    model = load_model(out)
    shipped = load_model(SHIPPED)
    for name, v in model.variants.items():
        assert v.sha256 == shipped.variants[name].sha256  # the fp32 graph is the served one
        p = v.precisions["fp16"]
        assert p.passed and p.check["exams"] >= 10 and report["variants"][name]["fp16"]["passed"]
        assert p.info["precision"] == "fp16" and p.check["validation_set"] and "speedup_vs_fp32" in p.check
    assert "Reduced-precision graphs" in (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    with pytest.raises(SystemExit, match="bf16"):
        main(["quantize", "--model", "ct_ap_resnet18@0.2.0", "--calibration", str(c.location), "--validation",
              str(c.location), "--out", str(tmp_path / "other"), "--version", "x", "--precisions", "bf16"])


def test_segmentation_exams_are_prepared_with_the_phases_the_model_reads(cohort):
    """A two-channel segmenter is calibrated and checked on the exam's portal venous phase,
    as the node serves it, not on a blank channel."""
    from mvi_node.commands.evaluate import served_engine
    from mvi_node.commands.quantize import _prepared

    c = cohort[0]
    engine, recipe, model = served_engine("liver_tumor_seg", [DEFAULT_ROOT], providers=["CPUExecutionProvider"])
    assert len(recipe.channel_roles) == 2
    prepared = list(_prepared(c, engine, recipe, False, lambda rows: rows))
    assert len(prepared) == 10
    for _row, (target, phases) in prepared:
        assert list(phases) == ["ct_portal_venous"]
        assert str(phases["ct_portal_venous"].datasets[0].SeriesInstanceUID) != \
            str(target.datasets[0].SeriesInstanceUID)


def test_int8_from_a_student_is_checked_against_the_served_fp32_graph(cohort, tmp_path, capsys):
    """``--int8-from``: the int8 copies come from the student's graphs, the fp32 graphs and
    the check stay the model's. A student that drifted from the model (its classifier's
    bias moved) gives copies that fail, although they match the student's own fp32."""
    import json

    import onnx
    from onnx import numpy_helper

    from mvi_node.commands.main import main
    from mvi_node.infer import load_model
    from mvi_node.infer.manifest import sha256_file

    c = cohort[0]
    student = tmp_path / "student"
    student.mkdir()
    for file in ("model.onnx", "model_image_only.onnx"):
        m = onnx.load(str(SHIPPED / file))
        for init in m.graph.initializer:
            if init.name == "net.fc.bias":  # +-1.5 on the logits: the probabilities move by far more than 0.02
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + np.float32([-0.75, 0.75]),
                                                      init.name))
        onnx.save(m, str(student / file))
    (student / "manifest.toml").write_text(tomli_w.dumps({"training": {"command": "mvi-node train test-student"}}),
                                           encoding="utf-8")
    out = tmp_path / "ct_ap_resnet18" / "0.2.0-int8"
    assert main(["quantize", "--model", "ct_ap_resnet18@0.2.0", "--calibration", str(c.location),
                 "--validation", str(c.location), "--out", str(out), "--version", "0.2.0-int8",
                 "--precisions", "int8", "--samples", "16", "--reps", "1", "--rounds", "1", "--no-bias-correction",
                 "--int8-from", str(student)]) == 0
    report = json.loads(capsys.readouterr().out)
    model, shipped = load_model(out), load_model(SHIPPED)
    for name, v in model.variants.items():
        assert v.sha256 == shipped.variants[name].sha256  # fp32 served as before
        p = v.precisions["int8"]
        assert sha256_file(student / v.path.name) in p.info["method"] and "test-student" in p.info["method"]
        assert not p.passed and not report["variants"][name]["int8"]["passed"]
        assert any("probability" in f for f in p.check["failures"]), p.check
    with pytest.raises(SystemExit, match="missing"):
        main(["quantize", "--model", "ct_ap_resnet18@0.2.0", "--calibration", str(c.location), "--validation",
              str(c.location), "--out", str(tmp_path / "other"), "--version", "x", "--precisions", "int8",
              "--int8-from", str(tmp_path)])


def test_a_card_made_from_a_quantised_folder_keeps_one_precision_section_and_its_own_title():
    from mvi_node.commands.quantize import _card

    source = ("# Model card: ct_ap_resnet18 0.2.0\n\n## Intended use\nresearch\n\n## Reduced-precision graphs\n\n"
              "| old | table |\n\n## Calibration\nplatt\n")
    manifest = {"recipe": "ct_ap_resnet18", "version": "0.3.0", "quantized_from": "ct_ap_resnet18 0.2.1",
                "training": {"quantize_command": "mvi-node quantize ..."}, "variants": {}}
    card = _card(source, manifest)
    assert card.startswith("# Model card: ct_ap_resnet18 0.3.0\n")
    assert card.count("## Reduced-precision graphs") == 1 and "| old | table |" not in card
    assert "## Calibration" in card and "platt" in card and "research" in card


def test_input_scaling_folds_into_the_first_quantisation(tmp_path):
    """``(x - mean) / std`` before an int8 first convolution becomes the quantisation's own
    scale and zero point: two element-wise ops fewer, the convolution reads the same
    integers (up to the nudged scale), and a chain it cannot fold is left alone."""
    import onnx
    import onnxruntime as ort
    import torch
    from torch import nn

    from mvi_node.infer import quantize as q

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, image):
            return self.conv((image - 0.45) / 0.25)

    torch.manual_seed(0)
    x = np.random.default_rng(0).integers(0, 256, (8, 3, 32, 32)).astype(np.float32) / 255.0
    src = tmp_path / "fp32.onnx"
    torch.onnx.export(Net().eval(), (torch.from_numpy(x),), str(src), input_names=["image"], output_names=["y"],
                      opset_version=17, dynamo=False)
    q.quantize_int8(src, tmp_path / "int8.onnx", [{"image": x}], float_first=False, bias_correction=False,
                    fold_input=False)
    model = onnx.load(str(tmp_path / "int8.onnx"))
    assert {"Sub", "Div"} <= {n.op_type for n in model.graph.node}
    assert q.fold_input_scaling(model)
    onnx.checker.check_model(model)
    assert not {"Sub", "Div"} & {n.op_type for n in model.graph.node}
    onnx.save(model, str(tmp_path / "folded.onnx"))
    run = lambda f: ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    y_fp32, y_int8, y_folded = run("fp32.onnx"), run("int8.onnx"), run("folded.onnx")
    err_int8, err_folded = np.abs(y_int8 - y_fp32).mean(), np.abs(y_folded - y_fp32).mean()
    assert err_folded < 1.5 * err_int8 + 1e-6, (err_int8, err_folded)  # int8 as before, not a new error
    assert not q.fold_input_scaling(model)  # nothing left to fold
    done = q.quantize_int8(src, tmp_path / "default.onnx", [{"image": x}], float_first=False, bias_correction=False)
    assert done["input_scaling_folded"] and "folded" in q.int8_method(done)
    assert not {"Sub", "Div"} & {n.op_type for n in onnx.load(str(tmp_path / "default.onnx")).graph.node}
    # a calibration that never saw the low end: the folded zero point would leave uint8
    q.quantize_int8(src, tmp_path / "high.onnx", [{"image": 0.6 + 0.4 * x}], float_first=False,
                    bias_correction=False)
    assert not q.fold_input_scaling(onnx.load(str(tmp_path / "high.onnx")))


def test_weight_zero_points_move_off_zero_with_the_same_outputs(tmp_path):
    """Zero point -1 and every int8 weight one lower: ONNX Runtime's general GEMM path in
    place of its symmetric-weight kernels, the same dequantised weights and so the same
    outputs to the bit; a 1 x 1 convolution and one named in ``skip`` keep zero point 0."""
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import numpy_helper
    from torch import nn

    from mvi_node.infer import quantize as q

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 7, stride=2, padding=3), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                        nn.ReLU(), nn.Conv2d(32, 8, 1)).eval()
    x = np.random.default_rng(0).random((8, 3, 32, 32), dtype=np.float32)
    src = tmp_path / "fp32.onnx"
    torch.onnx.export(net, (torch.from_numpy(x),), str(src), input_names=["image"], output_names=["y"],
                      opset_version=17, dynamo=False)
    q.quantize_int8(src, tmp_path / "int8.onnx", [{"image": x}], float_first=False, bias_correction=False,
                    offset_weights=False)
    model = onnx.load(str(tmp_path / "int8.onnx"))
    first, second, pointwise = [n.name for n in model.graph.node if n.op_type == "Conv"]
    assert q.offset_weight_zero_points(model, skip=[first]) == [second]
    onnx.checker.check_model(model)
    zeros = {n.name: numpy_helper.to_array(i) for n in model.graph.node if n.op_type == "DequantizeLinear"
             for i in model.graph.initializer if i.name == n.input[2] and i.data_type == onnx.TensorProto.INT8}
    assert sorted(int(z.min()) for z in zeros.values() if z.size > 1) == [-1, 0, 0]
    assert q.offset_weight_zero_points(model) == [first]  # the moved one is not moved again
    assert q.offset_weight_zero_points(model, pointwise=True) == [pointwise]
    onnx.save(model, str(tmp_path / "offset.onnx"))
    run = lambda f: ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert np.array_equal(run("int8.onnx"), run("offset.onnx"))
    done = q.quantize_int8(src, tmp_path / "on.onnx", [{"image": x}], float_first=False, bias_correction=False,
                           offset_weights=True)
    assert done["weights_offset"] == [first, second] and "zero point -1" in q.int8_method(done)
    assert np.array_equal(run("int8.onnx"), run("on.onnx"))
    # 3D convolutions stay: slower on the GEMM path (liver_tumor_seg on the AMX CPU)
    net3d = nn.Sequential(nn.Conv3d(2, 8, 3, padding=1)).eval()
    x3d = np.random.default_rng(1).random((1, 2, 8, 16, 16), dtype=np.float32)
    torch.onnx.export(net3d, (torch.from_numpy(x3d),), str(tmp_path / "3d.onnx"), input_names=["image"],
                      output_names=["y"], opset_version=17, dynamo=False)
    q.quantize_int8(tmp_path / "3d.onnx", tmp_path / "3d.int8.onnx", [{"image": x3d}], float_first=False,
                    bias_correction=False, offset_weights=False)
    assert q.offset_weight_zero_points(onnx.load(str(tmp_path / "3d.int8.onnx"))) == []
    # by default only where the CPU has AMX, the only kind it was measured on
    done = q.quantize_int8(src, tmp_path / "auto.onnx", [{"image": x}], float_first=False, bias_correction=False)
    assert bool(done.get("weights_offset")) == q.cpu_has_amx()
