"""``mvi-node evaluate`` and ``mvi-node calibrate`` over a synthetic cohort, as a site runs them."""

from __future__ import annotations

import csv
import json
import tomllib
from pathlib import Path

import pytest

from mvi_node.commands.main import main
from mvi_node.synth import generate_ct

sklearn_metrics = pytest.importorskip("sklearn.metrics")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    generate_ct(root / "synth", 14, seed=77, matrix=128, hard_cases="none", annotations="seg", seg_on="arterial")
    return root / "synth"


def _predictions(folder: Path) -> list[dict]:
    with open(folder / "predictions.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_evaluate_gives_the_auc_scikit_learn_computes_from_predictions_csv(cohort, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", "ct_ap_resnet18@0.1.0", "--cohort", str(cohort), "--out", str(out),
                 "--bootstrap", "50", "--no-pdf"]) == 0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    rows = [r for r in _predictions(out) if r["probability"]]
    assert metrics["n"] == len(rows) == 14 and metrics["positives"] == sum(int(r["mvi"]) for r in rows)
    auc = sklearn_metrics.roc_auc_score([int(r["mvi"]) for r in rows], [float(r["probability"]) for r in rows])
    assert metrics["auc"] == pytest.approx(auc, abs=1e-12)
    assert metrics["auc_ci_low"] <= metrics["auc"] <= metrics["auc_ci_high"]
    assert {r["roi_source"] for r in rows} == {"seg"} and all(r["exam"].isdigit() for r in rows)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "ct_ap_resnet18 0.1.0" in page and "NOT FOR CLINICAL USE" in page
    manifest = json.loads((cohort / "manifest.json").read_text(encoding="utf-8"))
    for study in manifest["studies"]:  # no identifier of the cohort reaches the outputs
        for f in out.rglob("*"):
            if f.is_file() and f.suffix in (".csv", ".json", ".html"):
                assert study["patient_id"] not in f.read_text(encoding="utf-8")


def test_unknown_model_version_is_refused_with_what_exists(cohort, tmp_path):
    with pytest.raises(SystemExit, match=r"ct_ap_resnet18@9.9: no model folder.*found versions"):
        main(["evaluate", "--model", "ct_ap_resnet18@9.9", "--cohort", str(cohort), "--out", str(tmp_path / "x")])


def test_calibrate_writes_a_servable_model_whose_decisions_are_unchanged(cohort, tmp_path):
    models = tmp_path / "models"
    folder = models / "ct_ap_resnet18" / "7.0.0"
    assert main(["calibrate", "--model", "ct_ap_resnet18@0.1.0", "--cohort", str(cohort), "--out", str(folder),
                 "--version", "7.0.0", "--min-exams", "10"]) == 0
    raw = tomllib.loads((folder / "manifest.toml").read_text(encoding="utf-8"))
    assert raw["calibrated_from"] == "ct_ap_resnet18 0.1.0"
    for v in raw["variants"].values():
        assert v["calibration"]["method"] == "platt" and "14 exams of synth synth" in v["calibration"]["fitted_on"]
        cal = v["metrics"]["calibration cohort, calibrated"]
        assert cal["patients"] == 14 and abs(cal["calibration_intercept"]) < 0.2  # fitted on this set
    assert "Calibration" in (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    # same graphs, same ranking and decisions; other probabilities
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["evaluate", "--model", "ct_ap_resnet18@0.1.0", "--cohort", str(cohort), "--out", str(a),
                 "--bootstrap", "0", "--no-pdf"]) == 0
    assert main(["evaluate", "--model", "ct_ap_resnet18@7.0.0", "--models", str(models), "--cohort", str(cohort),
                 "--out", str(b), "--bootstrap", "0", "--no-pdf"]) == 0
    pa, pb = _predictions(a), _predictions(b)
    assert [r["decision"] for r in pa] == [r["decision"] for r in pb]
    assert any(abs(float(x["probability"]) - float(y["probability"])) > 1e-3 for x, y in zip(pa, pb))
    ma, mb = (json.loads((d / "metrics.json").read_text(encoding="utf-8")) for d in (a, b))
    assert ma["auc"] == pytest.approx(mb["auc"], abs=1e-12)
    assert abs(mb["calibration_intercept"]) < abs(ma["calibration_intercept"])


def test_training_from_a_cohort_calibrates_on_the_validation_split(tmp_path):
    from mvi_node.infer import ModelRegistry

    generate_ct(tmp_path / "synth", 24, seed=78, matrix=64, hard_cases="none", annotations="seg", seg_on="arterial")
    out = tmp_path / "models" / "ct_ap_resnet18" / "8.0.0"
    assert main(["train", "ct_ap_resnet18", "--cohort", str(tmp_path / "synth"), "--out", str(out), "--seed", "3",
                 "--val-fraction", "0.5", "--epochs", "1", "--clinical-epochs", "1", "--max-steps", "1",
                 "--version", "8.0.0"]) == 0
    model = ModelRegistry([tmp_path / "models"]).get("ct_ap_resnet18")
    for variant in model.variants.values():
        assert variant.calibration is not None and variant.calibration.method == "platt"
        assert "validation split" in variant.calibration.fitted_on
        assert 0.0 < variant.threshold < 1.0
