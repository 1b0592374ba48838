"""Model registry (manifest checks), ONNX Runtime engine and ``mvi-node infer``."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
tomli_w = pytest.importorskip("tomli_w")

from mvi_node.clinical import FileClinicalSource  # noqa: E402
from mvi_node.infer import Engine, ManifestError, ModelRegistry, infer_path, pick_providers  # noqa: E402
from mvi_node.infer.manifest import variant_entry  # noqa: E402
from mvi_node.recipes.ct_ap_resnet18.export import export_onnx  # noqa: E402
from mvi_node.recipes.ct_ap_resnet18.network import MviResNet18  # noqa: E402
from mvi_node.synth import make_exam  # noqa: E402


def _write_model(folder: Path, version: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    variants = {}
    for name, clinical in (("clinical", True), ("image_only", False)):
        path = export_onnx(MviResNet18(clinical).eval(), folder / f"{name}.onnx")
        variants[name] = variant_entry(path, 0.5, {"validation": {"auc": 0.5}}, folder)
    manifest = {"recipe": "ct_ap_resnet18", "version": version, "intended_use": "tests only",
                "training_data": "synthetic phantoms — not for clinical use", "variants": variants}
    (folder / "manifest.toml").write_text(tomli_w.dumps(manifest), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def model_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    _write_model(root / "ct_ap_resnet18" / "0.0.1", "0.0.1")
    return root


@pytest.fixture(scope="module")
def exams(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for kind in ("seg", "none"):
        d = tmp_path_factory.mktemp(f"exam_{kind}")
        make_exam(d, "ct", seed=21, index=1, mvi=True, matrix=128, hard_cases="none", annotations=kind)
        out[kind] = d
    return out


def _copy_model(model_root: Path, dst: Path) -> Path:
    shutil.copytree(model_root / "ct_ap_resnet18" / "0.0.1", dst / "ct_ap_resnet18" / "0.0.1")
    return dst / "ct_ap_resnet18" / "0.0.1"


def test_registry_loads_verified_models(model_root):
    reg = ModelRegistry([model_root])
    m = reg.get("ct_ap_resnet18")
    assert m is not None and m.version == "0.0.1" and set(m.variants) == {"clinical", "image_only"}
    assert m.variants["clinical"].needs_clinical and not m.variants["image_only"].needs_clinical
    ident = m.identity("clinical")
    assert ident["sha256"] == m.variants["clinical"].sha256 and "not for clinical use" in ident["training_data"]


def test_tampered_onnx_is_refused_at_start(model_root, tmp_path):
    folder = _copy_model(model_root, tmp_path)
    with open(folder / "image_only.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ManifestError, match="sha256"):
        ModelRegistry([tmp_path])
    lax = ModelRegistry([tmp_path], strict=False)
    assert lax.get("ct_ap_resnet18") is None and "sha256" in lax.refused[0][1]


def test_declared_shape_that_does_not_match_the_graph_is_refused(model_root, tmp_path):
    folder = _copy_model(model_root, tmp_path)
    raw = tomllib.loads((folder / "manifest.toml").read_text(encoding="utf-8"))
    raw["variants"]["clinical"]["inputs"][0]["shape"] = ["N", 3, 128, 128]
    (folder / "manifest.toml").write_text(tomli_w.dumps(raw), encoding="utf-8")
    with pytest.raises(ManifestError, match="image declared"):
        ModelRegistry([tmp_path])


def test_site_model_dropped_in_another_root_wins_by_version(model_root, tmp_path):
    site = _write_model(tmp_path / "ct_ap_resnet18" / "2.0.0-site", "2.0.0-site")
    reg = ModelRegistry([model_root, tmp_path])
    assert reg.get("ct_ap_resnet18").folder == site
    assert ModelRegistry([model_root, tmp_path], pins={"ct_ap_resnet18": "0.0.1"}).get("ct_ap_resnet18").version == "0.0.1"


def test_providers_prefer_cuda_and_fall_back_to_cpu(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert pick_providers() == ["CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert pick_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert pick_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_engine_with_all_clinical_factors_runs_the_clinical_variant(model_root, exams):
    engine = Engine(ModelRegistry([model_root]), FileClinicalSource(exams["seg"] / "clinical"))
    results = infer_path(exams["seg"] / "dicom", engine)["studies"]
    [r] = [r for r in results if r.recipe == "ct_ap_resnet18"]
    assert r.outcome == "ok" and r.model["variant"] == "clinical" and r.clinical_factors_used
    assert r.clinical_missing == [] and r.roi["source"] == "seg"
    n = len(r.slice_info)
    assert n > 0 and r.gradcam.shape == (n, 256, 256) and 0 <= r.gradcam.min() and r.gradcam.max() <= 1 + 1e-6
    probs = [s["probability"] for s in r.slice_info]
    assert r.probability == pytest.approx(max(probs), abs=1e-6)
    assert r.predicted_mvi == (r.probability >= r.threshold)
    assert len({s["sop_instance_uid"] for s in r.slice_info}) == n
    assert all(s["crop_box"]["edge_mm"] > 0 for s in r.slice_info)
    sess = engine.session(engine.registry.get("ct_ap_resnet18"), "clinical")
    infer_path(exams["seg"] / "dicom", engine)
    assert engine.session(engine.registry.get("ct_ap_resnet18"), "clinical") is sess  # reused across jobs


def test_missing_lab_factors_fall_back_to_image_only_and_say_so(model_root, exams):
    engine = Engine(ModelRegistry([model_root]))
    [r] = [r for r in infer_path(exams["seg"] / "dicom", engine)["studies"] if r.recipe == "ct_ap_resnet18"]
    assert r.outcome == "ok" and r.model["variant"] == "image_only" and not r.clinical_factors_used
    assert set(r.clinical_missing) == {"afp_ng_ml", "child_pugh", "hbsag", "hcv"}
    d = r.as_dict()
    assert d["clinical_factors_used"] is False and d["clinical_factors_missing"]


def test_exam_without_annotation_reports_no_tumour_roi(model_root, exams):
    engine = Engine(ModelRegistry([model_root]))
    [r] = [r for r in infer_path(exams["none"] / "dicom", engine)["studies"] if r.recipe == "ct_ap_resnet18"]
    assert r.outcome == "no tumour ROI" and r.probability is None and r.reasons
    assert r.as_dict()["model_version"] == "0.0.1"


def test_cli_json(model_root, exams, capsys):
    from mvi_node.commands.main import main

    rc = main(["infer", str(exams["seg"] / "dicom"), "--json", "--models", str(model_root),
               "--clinical", str(exams["seg"] / "clinical")])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    [s] = [s for s in out["studies"] if s["recipe"] == "ct_ap_resnet18"]
    for key in ("patient_id", "study_instance_uids", "recipe", "model_version", "probability", "predicted_mvi",
                "threshold", "slices", "roi_source", "clinical_factors_used", "outcome", "gradcam", "model_sha256",
                "intended_use"):
        assert key in s
    assert s["outcome"] == "ok" and s["slices"] == len(s["gradcam"]["slices"])


def test_cli_refuses_a_bad_model_folder(model_root, tmp_path, capsys):
    from mvi_node.commands.main import main

    folder = _copy_model(model_root, tmp_path)
    (folder / "clinical.onnx").write_bytes(b"not a graph")
    assert main(["infer", str(tmp_path), "--models", str(tmp_path)]) == 2
    assert "refused" in capsys.readouterr().err


def test_clinical_file_sources_json_csv_and_header(tmp_path):
    from pydicom.dataset import Dataset

    from mvi_node.clinical import header_factors, open_source
    from mvi_node.recipes.ct_ap_resnet18.recipe import FACTORS

    (tmp_path / "labs.csv").write_text("accession_number,patient_id,afp_ng_ml,child_pugh,hbsag,hcv\n"
                                       "ACC1,P1,400,B,yes,0\n", encoding="utf-8")
    (tmp_path / "labs.json").write_text(json.dumps([{"patient_id": "P2", "afp_ng_ml": 3.5, "child_pugh": "a",
                                                     "hbsag": False, "hcv": True}]), encoding="utf-8")
    csv_src, json_src = open_source(tmp_path / "labs.csv"), open_source(tmp_path / "labs.json")
    assert csv_src.lookup("ACC1", "other")["afp_ng_ml"] == "400"
    assert json_src.lookup("", "P2")["hcv"] is True and json_src.lookup("X", "Y") is None
    assert open_source(None).lookup("ACC1", "P1") is None
    f = FACTORS.values()
    f.update(csv_src.lookup("ACC1", ""), "file")
    ds = Dataset()
    ds.PatientSex, ds.PatientBirthDate, ds.StudyDate = "F", "19700615", "20200615"
    f.update(header_factors(ds), "header")
    assert (f["afp_ng_ml"], f["child_pugh"], f["hbsag"], f["hcv"], f["sex"]) == (400.0, "B", True, False, "F")
    assert f["age"] == pytest.approx(50.0, abs=0.01) and f.missing() == ["mtd_mm"]
    ds.PatientAge = "063Y"
    assert header_factors(ds)["age"] == 63.0


def test_infer_staged_study_finds_phases_sent_as_other_studies(model_root, tmp_path):
    import pydicom

    from mvi_node.pipeline import selection_report

    entry = make_exam(tmp_path / "src", "ct", seed=21, index=2, mvi=False, matrix=128, annotations="seg",
                      hard_cases="none", split_studies=True)
    assert len(entry["study_instance_uids"]) > 1
    staging = tmp_path / "staging"
    for f in (tmp_path / "src" / entry["dicom_dir"]).rglob("*.dcm"):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        dst = staging / str(ds.StudyInstanceUID) / str(ds.SeriesInstanceUID) / f"{ds.SOPInstanceUID}.dcm"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dst)
    arterial = next(u for u, r in entry["series"].items() if r == "ct_arterial")
    seg = next(u for u, r in entry["series"].items() if r == "seg")
    study = entry["series_detail"][seg]["study_instance_uid"]
    engine = Engine(ModelRegistry([model_root]))
    exams, report = selection_report(staging, study, needs=engine.recipes.needs())
    results = [r for exam in exams for r in engine.run_exam(exam)]
    assert [r["name"] for s in report["studies"] for r in s["recipes"]] == ["ct_ap_resnet18"]
    [r] = [r for r in results if r.recipe == "ct_ap_resnet18"]
    assert r.outcome == "ok" and r.series_instance_uid == arterial and set(r.study_instance_uids) > {study}


def test_serving_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; sys.modules['monai'] = None\n"
            "import mvi_node.infer, mvi_node.commands.infer, mvi_node.roi, mvi_node.clinical\n"
            "import mvi_node.recipes.ct_ap_resnet18.recipe, mvi_node.recipes.ct_ap_resnet18.evaluate\n"
            "import mvi_node.pipeline, mvi_node.report\n"
            "from mvi_node.commands.main import build_parser; build_parser()\n")
    subprocess.run([sys.executable, "-c", code], check=True)
