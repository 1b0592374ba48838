"""The recipe interface: registry, selection by recipe, the CT recipe unchanged, MR exams."""

from __future__ import annotations

import json
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
    # a recipe with no code is never offered (the old registry listed mr_3seq_grade)
    assert "mr_3seq_grade" not in catalog.names()
    with pytest.raises(RecipeError, match="unknown recipe 'nope'"):
        catalog.get("nope")


def test_ct_recipe_outputs_match_the_code_before_the_interface(golden_exams):
    """Same probabilities (1e-6), same SR content tree and UIDs, same captures."""
    expected = json.loads(REFERENCE.read_text(encoding="utf-8"))["exams"]
    got = json.loads(json.dumps(outputs(golden_exams, DEFAULT_ROOT)))
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
