"""docs/architecture.md's "how to add a recipe", followed literally, end to end over DICOM.

The walkthrough's code blocks marked ``file=...`` are written out as they stand; the
toy package is made importable with an entry point (what ``pip install`` of its
pyproject would write), its model folder is placed in a ``[models] dirs`` root, and a
synthetic exam sent to a real node comes back with the toy recipe's own SR.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from conftest import storescu
from mvi_node.synth import make_exam
from test_e2e_results import _num, _texts, _valid

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
FENCE = re.compile(r"^```(\w+) file=(\S+)\n(.*?)^```", re.M | re.S)


def _blocks() -> dict[str, str]:
    return {name: body for _lang, name, body in FENCE.findall(DOC.read_text(encoding="utf-8"))}


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, Path]:
    """The walkthrough's package (importable, with its entry point) and model root."""
    root = tmp_path_factory.mktemp("toy")
    blocks = _blocks()
    site, models = root / "site", root / "models"
    for name, body in blocks.items():
        if name.startswith("mvi_toy_recipe/"):
            (site / name).parent.mkdir(parents=True, exist_ok=True)
            (site / name).write_text(body, encoding="utf-8")
    project = tomllib.loads(blocks["pyproject.toml"])
    dist = site / f"{project['project']['name'].replace('-', '_')}-{project['project']['version']}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['project']['name']}\n"
                                   f"Version: {project['project']['version']}\n", encoding="utf-8")
    lines = []
    for group, eps in project["project"]["entry-points"].items():
        lines += [f"[{group}]"] + [f"{k} = {v}" for k, v in eps.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifest_name = next(n for n in blocks if n.endswith("manifest.toml"))
    folder = root / Path(manifest_name).parent
    folder.mkdir(parents=True)
    np.savez(folder / "model.npz", coef=np.array([0.02]), intercept=np.array([-2.0]))
    digest = hashlib.sha256((folder / "model.npz").read_bytes()).hexdigest()
    (folder / "manifest.toml").write_text(blocks[manifest_name].replace("{sha256 of model.npz}", digest),
                                          encoding="utf-8")
    return {"site": site, "models": models, "sha256": Path(digest)}


def _env(toy) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(toy["site"]), os.environ.get("PYTHONPATH", "")])}


def test_walkthrough_recipe_is_discovered_and_selected(toy, tmp_path):
    exam = tmp_path / "exam"
    make_exam(exam, "ct", seed=91, index=0, mvi=True, matrix=128, hard_cases="none", annotations="seg")
    out = subprocess.run([sys.executable, "-m", "mvi_node", "select", str(exam / "dicom"), "--json"],
                         capture_output=True, text=True, env=_env(toy), check=True)
    [study] = json.loads(out.stdout)["studies"]
    assert {r["name"] for r in study["recipes"]} == {"ct_ap_resnet18", "toy_mean_hu"}
    # without the package installed the recipe does not exist
    out = subprocess.run([sys.executable, "-m", "mvi_node", "select", str(exam / "dicom"), "--json"],
                         capture_output=True, text=True, check=True)
    assert "toy_mean_hu" not in out.stdout


def test_a_broken_site_recipe_is_refused_with_its_name(toy, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(toy["site"], bad)
    ep = next(bad.glob("*.dist-info")) / "entry_points.txt"
    ep.write_text(ep.read_text(encoding="utf-8") + "broken = mvi_toy_recipe.recipe:Missing\n", encoding="utf-8")
    code = ("from mvi_node.infer import RecipeCatalog; c = RecipeCatalog.discover(); "
            "import json; print(json.dumps({'names': c.names(), 'refused': c.refused}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(bad)})
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert "toy_mean_hu" in got["names"] and "broken" not in got["names"]
    assert any("broken" in r and "Missing" in r for r in got["refused"])


def test_walkthrough_recipe_is_served_and_reported_over_dicom(toy, node, tmp_path, pacs):
    exam = tmp_path / "exam"
    make_exam(exam, "ct", seed=92, index=0, mvi=True, matrix=128, hard_cases="none", annotations="seg",
              seg_on="arterial")
    n = node(quiet=1.0, env={"PYTHONPATH": _env(toy)["PYTHONPATH"],
                             "MVI_MODELS__DIRS": json.dumps([str(toy["models"])]),
                             **pacs.as_destination()})
    storescu(n.port, exam / "dicom", extra=["-R"])
    files = pacs.wait_for(6, timeout=120)  # CT: SR + 3 SCs; toy: SR + 1 SC
    results = [(f, dcmread(f)) for f in files]
    def ours(d):  # the Contributing Equipment item naming the model (the scanner's and highdicom's are others)
        return next(e for e in d.ContributingEquipmentSequence if "sha256" in str(e.get("ContributionDescription", "")))

    srs = {str(ours(d).ManufacturerModelName).split()[0]: (f, d) for f, d in results if d.Modality == "SR"}
    assert set(srs) == {"ct_ap_resnet18", "toy_mean_hu"}, [d.SeriesDescription for _f, d in results]
    path, sr = srs["toy_mean_hu"]
    _valid(path)
    p = _num(sr, "Toy enhancement probability")
    assert 0.0 <= p <= 1.0
    assert "Toy" in sr.ContentDescription and "MVI" not in sr.ContentDescription
    assert "Microvascular invasion probability" not in json.dumps([str(i.ConceptNameCodeSequence[0].CodeMeaning)
                                                                    for i in sr.ContentSequence])
    texts = _texts(sr)
    assert "Tests of the recipe interface only" in texts
    assert str(toy["sha256"]) in str(ours(sr).ContributionDescription)
    assert sr.ConceptNameCodeSequence[0].CodeMeaning == "Imaging Measurement Report"
    toy_scs = [d for _f, d in results if d.Modality != "SR" and "Toy" in str(d.SeriesDescription)]
    assert len(toy_scs) == 1 and "NOT FOR CLINICAL USE" in toy_scs[0].SeriesDescription
    import httpx

    [job] = [j for j in n.status_jobs() if j["kind"] == "study"]
    detail = httpx.get(f"http://127.0.0.1:{n.admin_port}/jobs/{job['id']}", timeout=10).json()
    recipes = {r["recipe"]: r for e in detail["result"]["inference"] for r in e}
    assert recipes["toy_mean_hu"]["outcome"] == "ok" and recipes["toy_mean_hu"]["model_version"] == "0.0.1"
    assert recipes["toy_mean_hu"]["roi_source"] == "seg"
