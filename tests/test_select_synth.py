"""Selection against the synthetic generator's ground truth (manifest.json).

Every vendor profile, both MR agents, every hard case switched on (opaque descriptions,
missing agent, split studies, reformats, early arterial, multi-phase series), and each
description language: roles and recipe inputs must match the manifest exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mvi_node.commands.main import main
from mvi_node.select.engine import select_path
from mvi_node.select.report import build_report
from select_fixtures import SEED_NEEDS

VENDORS = ("ge", "siemens", "philips", "canon")
MANIFEST_RECIPES = ("ct_ap_resnet18", "mr_3seq_grade")


def _synth(tmp_path: Path, capsys, *args: str) -> Path:
    out = tmp_path / "_".join(a.strip("-") for a in args)
    assert main(["synth", *args, "--out", str(out), "--matrix", "32"]) == 0
    capsys.readouterr()
    return out


def _expected(study: dict) -> dict[str, str]:
    exp = {}
    for uid, role in study["series"].items():
        if uid in study.get("phases", {}):
            exp.update({f"{uid}#{tpi}": r for tpi, r in study["phases"][uid].items()})
        else:
            exp[uid] = role
    return exp


def _check(out: Path) -> int:
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    report = build_report(select_path(out), needs=SEED_NEEDS)
    json.dumps(report)
    got, recipes = {}, {}
    for st in report["studies"]:
        key = tuple(sorted(st["study_instance_uids"]))
        for s in st["series"]:
            got[s["series_instance_uid"]] = (s["role"], s["reason"])
        # the manifest knows these two recipes; others registered later are not judged here
        recipes[key] = {r["name"]: r["inputs"] for r in st["recipes"] if r["name"] in MANIFEST_RECIPES}
    wrong = []
    for study in manifest["studies"]:
        for uid, role in _expected(study).items():
            role_got, reason = got.get(uid, (None, "not reported"))
            if role_got != role:
                wrong.append(f"{uid}: expected {role}, got {role_got}: {reason}")
        key = tuple(sorted(study["study_instance_uids"]))
        if recipes.get(key) != study.get("recipes", {}):
            wrong.append(f"exam {key}: recipes expected {study.get('recipes')}, got {recipes.get(key)}")
    assert len(report["studies"]) == len(manifest["studies"]), "exam grouping differs"
    assert not wrong, "\n".join(wrong)
    return sum(len(_expected(s)) for s in manifest["studies"])


# one description language per vendor, so each language meets another vendor's habits
CT_LANGUAGE = {"ge": "zh", "siemens": "de", "philips": "es", "canon": "en"}
MR_LANGUAGE = {"ge": "de", "siemens": "es", "philips": "zh", "canon": "en"}


@pytest.mark.parametrize("vendor", VENDORS)
def test_ct_every_vendor_all_hard_cases(tmp_path, capsys, vendor):
    out = _synth(
        tmp_path, capsys, "ct", "--vendor", vendor, "--patients", "1", "--seed", "7", "--hard-cases", "all",
        "--thin", "--language", CT_LANGUAGE[vendor],
    )
    assert _check(out) > 0


@pytest.mark.parametrize("agent", ["gd-eob", "extracellular"])
@pytest.mark.parametrize("vendor", VENDORS)
def test_mr_every_vendor_and_agent_all_hard_cases(tmp_path, capsys, vendor, agent):
    extra = ["--language", MR_LANGUAGE[vendor]] if agent == "gd-eob" else []
    out = _synth(
        tmp_path, capsys, "mr", "--vendor", vendor, "--agent", agent, "--patients", "1", "--seed", "8",
        "--hard-cases", "all", *extra,
    )
    assert _check(out) > 0


@pytest.mark.parametrize("annotations", ["circle", "sr", "none"])
def test_annotation_kinds(tmp_path, capsys, annotations):
    modality = "mr" if annotations == "sr" else "ct"
    out = _synth(tmp_path, capsys, modality, "--patients", "1", "--seed", "10", "--annotations", annotations)
    assert _check(out) > 0


@pytest.mark.slow
def test_mixed_population(tmp_path, capsys):
    for modality in ("ct", "mr"):
        out = _synth(tmp_path, capsys, modality, "--patients", "6", "--seed", "12", "--hard-cases", "mixed")
        assert _check(out) > 0
