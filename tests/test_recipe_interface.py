"""The recipe interface: registry, selection by recipe, the CT recipe unchanged, MR exams."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ct_golden import make_exams, outputs
from mvi_node.infer import Engine, ModelRegistry, Recipe, RecipeCatalog, RecipeError
from mvi_node.infer.registry import DEFAULT_ROOT

REFERENCE = Path(__file__).parent / "data" / "ct_ap_resnet18_reference.json"


@pytest.fixture(scope="module")
def golden_exams(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("golden")
    make_exams(root)
    return root


def test_package_recipes_come_from_the_entry_point_group():
    catalog = RecipeCatalog.discover()
    assert "ct_ap_resnet18" in catalog.names() and not catalog.refused
    ct = catalog.get("ct_ap_resnet18")
    assert isinstance(ct, Recipe) and ct.modalities == {"CT"} and ct.requires == ("ct_arterial",)
    assert "afp_ng_ml" in ct.factors.names and ct.endpoint.name == "mvi"
    # seed 001's recipe has code now, under its entry point, for MR only
    mr = catalog.get("mr_3seq_grade")
    assert mr.modalities == {"MR"} and mr.endpoint.classes == ("M0", "M1", "M2")
    assert mr.requires == ("mr_t1_pre", "mr_portal_venous", "mr_transitional")
    with pytest.raises(RecipeError, match="unknown recipe 'nope'"):
        catalog.get("nope")


def test_ct_recipe_outputs_match_the_code_before_the_interface(golden_exams):
    """Same probabilities (1e-6), same SR content tree and UIDs, same captures."""
    expected = json.loads(REFERENCE.read_text(encoding="utf-8"))["exams"]
    # the reference was made with 0.1.0, the model the code before the interface served
    got = json.loads(json.dumps(outputs(golden_exams, DEFAULT_ROOT, "0.1.0")))
    assert set(got) == set(expected)
    for name, entries in expected.items():
        assert len(got[name]) == len(entries), name
        for e, g in zip(entries, got[name]):
            assert (g["recipe"], g["outcome"], g["variant"]) == (e["recipe"], e["outcome"], e["variant"]), name
            if e["probability"] is None:
                assert g["probability"] is None
            else:
                assert g["probability"] == pytest.approx(e["probability"], abs=1e-6), name
                assert g["threshold"] == pytest.approx(e["threshold"], abs=1e-9)
            assert [s[0] for s in g["slices"]] == [s[0] for s in e["slices"]]
            for gs, es in zip(g["slices"], e["slices"]):
                assert gs[1] == pytest.approx(es[1], abs=1e-6)
            assert g["sr"] == e["sr"], name
            assert g["sc"] == e["sc"], name


def test_engine_offers_an_exam_only_to_recipes_of_its_modality(tmp_path):
    from mvi_node.select.engine import select_path
    from mvi_node.synth import make_exam

    make_exam(tmp_path / "mr", "mr", seed=5, index=0, mvi=True, matrix=64, hard_cases="none", annotations="seg")
    # a site serving CT recipes only (mr_3seq_grade pinned away)
    engine = Engine(ModelRegistry([DEFAULT_ROOT], pins={"mr_3seq_grade": "none"}))
    [exam] = select_path(tmp_path / "mr" / "dicom")
    [res] = engine.run_exam(exam)
    assert res.recipe == "" and res.reported and res.outcome == "no recipe for this exam"
    assert res.procedure.meaning == "MRI unspecified body region"
    assert res.not_run and "no served recipe reads MR exams" in res.not_run[0][1]


def test_mr_exam_sent_to_the_node_gets_one_sr_that_never_says_ct(node, tmp_path, pacs):
    from conftest import storescu
    from pydicom import dcmread
    from test_e2e_results import _texts, _valid

    from mvi_node.synth import make_exam

    make_exam(tmp_path / "mr", "mr", seed=6, index=0, mvi=True, matrix=64, hard_cases="none", annotations="seg")
    n = node(quiet=1.0, env={**pacs.as_destination(),
                             "MVI_MODELS__PINS": json.dumps({"mr_3seq_grade": "none"})})  # CT-only site
    storescu(n.port, tmp_path / "mr" / "dicom", extra=["-R"])
    files = pacs.wait_for(1, timeout=60)
    time.sleep(2)  # nothing else may follow
    files = pacs.received()
    assert len(files) == 1
    sr = dcmread(files[0])
    _valid(files[0])
    procedure = next(i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121058")
    assert procedure.ConceptCodeSequence[0].CodeMeaning == "MRI unspecified body region"
    text = _texts(sr)
    assert "CT unspecified" not in str(sr.to_json()) and "no served recipe reads MR exams" in text
    assert "ct_ap_resnet18 (CT)" in text  # which recipes were there, and what they read


def test_a_recipe_missing_a_piece_is_refused_with_its_name():
    from importlib.metadata import EntryPoint

    from mvi_node.infer.catalog import load_entry_point

    class NoRoles(Recipe):
        name = "no_roles"
        modalities = frozenset({"CT"})

        def prepare(self, exam):
            return None

        def predict(self, prepared, model):
            return None

    with pytest.raises(RecipeError, match="recipe 'no_roles'.*requires no series role"):
        RecipeCatalog([NoRoles()])
    NoRoles.requires = ("ct_arterial", "ct_lunar_phase")
    with pytest.raises(RecipeError, match=r"recipe 'no_roles'.*unknown roles \['ct_lunar_phase'\]"):
        RecipeCatalog([NoRoles()])
    # a class that leaves predict() unimplemented, named through its entry point
    ep = EntryPoint("half", "test_recipe_interface:HalfRecipe", "mvi_node.recipes")
    with pytest.raises(RecipeError, match="entry point half = test_recipe_interface:HalfRecipe.*predict"):
        load_entry_point(ep)


class HalfRecipe(Recipe):
    name = "half"
    modalities = frozenset({"CT"})
    requires = ("ct_arterial",)

    def prepare(self, exam):
        return None


def test_classical_model_arrays_load_without_unpickling(tmp_path):
    import hashlib

    import numpy as np

    from mvi_node.infer import ManifestError, load_model

    folder = tmp_path / "gp" / "0.1"
    folder.mkdir(parents=True)

    def manifest(file: str) -> None:
        digest = hashlib.sha256((folder / file).read_bytes()).hexdigest()
        (folder / "manifest.toml").write_text(
            f'recipe = "gp"\nversion = "0.1"\nintended_use = "tests"\ntraining_data = "synthetic"\n'
            f'[variants.gp]\nfile = "{file}"\nsha256 = "{digest}"\nthreshold = 0.5\n', encoding="utf-8")

    np.savez(folder / "plain.npz", alpha=np.arange(3.0), length_scale=np.array([2.0]))
    manifest("plain.npz")
    model = load_model(folder)
    assert model.variants["gp"].kind == "arrays"
    assert model.variants["gp"].arrays()["length_scale"][0] == 2.0
    np.savez(folder / "pickled.npz", payload=np.array([{"code": "runs on load"}], dtype=object))
    manifest("pickled.npz")
    with pytest.raises(ManifestError, match="not a plain-array .npz"):
        load_model(folder)


def test_stored_calibration_is_applied_when_serving_and_said_in_the_sr(golden_exams, tmp_path):
    import math
    import tomllib

    import tomli_w

    from mvi_node.clinical import open_source
    from mvi_node.report.outputs import build_results
    from mvi_node.select.engine import select_path

    src = DEFAULT_ROOT / "ct_ap_resnet18" / "0.1.0"
    dst = tmp_path / "models" / "ct_ap_resnet18" / "0.1.0-cal"
    dst.mkdir(parents=True)
    for f in src.glob("*.onnx"):
        (dst / f.name).symlink_to(f)
    raw = tomllib.loads((src / "manifest.toml").read_text(encoding="utf-8"))
    raw["version"] = "0.1.0-cal"
    for v in raw["variants"].values():
        v["calibration"] = {"method": "platt", "a": 0.5, "b": -1.0, "on_logit": True,
                            "fitted_on": "a test cohort of 10 exams"}
    (dst / "manifest.toml").write_text(tomli_w.dumps(raw), encoding="utf-8")

    folder = golden_exams / "seg_clinical_pos"
    [exam] = select_path(folder / "dicom")
    plain = Engine(ModelRegistry([DEFAULT_ROOT], pins={"ct_ap_resnet18": "0.1.0"}),
                   open_source(folder / "clinical")).run_exam(exam)[0]
    cal = Engine(ModelRegistry([tmp_path / "models"]), open_source(folder / "clinical")).run_exam(exam)[0]
    p = plain.probability
    expected = 1 / (1 + math.exp(-(0.5 * math.log(p / (1 - p)) - 1.0)))
    assert cal.probability == pytest.approx(expected, abs=1e-9) and cal.prediction.raw_probability == p
    assert cal.decision == (cal.probability >= cal.threshold)
    assert cal.as_dict()["calibration"] == "Platt scaling on a test cohort of 10 exams"
    sr_plain, sr_cal = build_results(plain, exam, 0)[0], build_results(cal, exam, 0)[0]
    assert sr_plain.SOPInstanceUID != sr_cal.SOPInstanceUID  # another algorithm, another result
    texts = [str(i.TextValue) for i in _walk(sr_cal) if i.ValueType == "TEXT"]
    assert "Probability calibrated by Platt scaling on a test cohort of 10 exams" in texts
    assert not any("calibrated" in str(i.get("TextValue", "")) for i in _walk(sr_plain))


def test_a_malformed_calibration_refuses_the_model(tmp_path):
    import hashlib

    import numpy as np

    from mvi_node.infer import ManifestError, load_model

    folder = tmp_path / "m"
    folder.mkdir()
    np.savez(folder / "w.npz", w=np.ones(2))
    digest = hashlib.sha256((folder / "w.npz").read_bytes()).hexdigest()
    (folder / "manifest.toml").write_text(
        f'recipe = "x"\nversion = "1"\nintended_use = "t"\ntraining_data = "t"\n[variants.v]\nfile = "w.npz"\n'
        f'sha256 = "{digest}"\nthreshold = 0.5\n[variants.v.calibration]\nmethod = "isotonic"\nx = [0.0, 0.5]\n'
        f'y = [0.9, 0.1]\n', encoding="utf-8")
    with pytest.raises(ManifestError, match="non-decreasing"):
        load_model(folder)


def _walk(ds):
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _walk(item)


def test_an_image_without_pixel_spacing_gets_an_explanatory_sr_not_a_dead_job(golden_exams, tmp_path):
    """A real exam's images lacked PixelSpacing: the recipe cannot run, and the report
    used to raise building its Image Library, so the job went dead with no SR."""
    import shutil

    import pydicom

    from mvi_node.report.outputs import build_results
    from mvi_node.report.validate import dciodvfy_errors
    from mvi_node.select.engine import select_path

    folder = tmp_path / "nops"
    shutil.copytree(golden_exams / "seg_clinical_pos", folder)
    for f in (folder / "dicom").rglob("*.dcm"):
        ds = pydicom.dcmread(f)
        if ds.Modality == "CT" and "PixelSpacing" in ds:
            del ds.PixelSpacing
            ds.save_as(f)
    [exam] = select_path(folder / "dicom")
    [res] = Engine(ModelRegistry([DEFAULT_ROOT])).run_exam(exam)
    assert res.outcome == "failed"
    [sr] = build_results(res, exam, 3)
    assert "not evaluated" in sr.ContentDescription
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
