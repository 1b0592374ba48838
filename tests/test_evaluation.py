"""mvi_node.evaluation: the metrics, calibration, decision curves and model card that every
recipe shares, checked against values worked out by hand."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

from mvi_node import evaluation as ev

ROOT = Path(__file__).resolve().parents[1]

# 3 positives, 4 negatives, one tie across classes (0.4)
POS, NEG = [0.9, 0.8, 0.4], [0.7, 0.3, 0.4, 0.1]
Y = np.array([1] * 3 + [0] * 4)
S = np.array(POS + NEG)


def test_delong_auc_is_the_mann_whitney_auc_with_the_hand_computed_variance():
    # pairs won: 0.9 and 0.8 beat all 4 negatives, 0.4 beats 0.3 and 0.1 and ties 0.4
    auc, var = ev.auc_delong(Y, S)
    assert auc == pytest.approx(10.5 / 12)
    # structural components: positives (1, 1, 0.625), negatives (2/3, 1, 5/6, 1)
    # var = s2(pos) / 3 + s2(neg) / 4 = (0.09375 / 2) / 3 + (11 / 144 / 3) / 4
    assert var == pytest.approx(1 / 64 + 11 / 1728)
    auc2, lo, hi = ev.auc_ci(Y, S)
    half = 1.959963984540054 * math.sqrt(19 / 864)
    assert auc2 == auc and lo == pytest.approx(auc - half) and hi == 1.0 and lo < auc < hi


def test_auc_ci_level_and_one_class():
    _, lo95, _ = ev.auc_ci(Y, S)
    _, lo90, _ = ev.auc_ci(Y, S, level=0.90)
    assert lo90 > lo95
    with pytest.raises(ValueError):
        ev.auc_delong([1, 1], [0.2, 0.3])


def test_youden_threshold_on_a_separable_case():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.9])
    t = ev.youden_threshold(y, s)
    assert t == 0.7  # the lowest observed score with J = 1
    m = ev.metrics_at(y, s, t)
    assert m["sensitivity"] == m["specificity"] == m["accuracy"] == m["auc"] == 1.0


def test_metrics_at_counts():
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.6, 0.2, 0.7, 0.4, 0.1, 0.3])
    assert ev.confusion(y, s, 0.5) == {"tp": 2, "fp": 1, "tn": 3, "fn": 1}
    m = ev.metrics_at(y, s, 0.5)
    assert m["sensitivity"] == 0.6667 and m["specificity"] == 0.75 and m["accuracy"] == 0.7143
    assert m["patients"] == 7 and m["positives"] == 3 and m["threshold"] == 0.5
    assert m["auc_ci_method"] == "DeLong" and m["auc"] == round(ev.auc_delong(y, s)[0], 4)
    # a score equal to the threshold is positive
    assert ev.confusion(y, s, 0.6)["tp"] == 2


def test_multiclass_one_vs_rest_and_macro_auc():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.5, 0.4, 0.1], [0.2, 0.6, 0.2],
                      [0.4, 0.3, 0.3], [0.1, 0.2, 0.7], [0.1, 0.5, 0.4]])
    per = ev.one_vs_rest_auc(labels, probs)
    for k in range(3):
        assert per[k] == pytest.approx(ev.auc_delong(labels == k, probs[:, k])[0])
    # M1 vs rest: positives 0.6, 0.3; negatives 0.1, 0.4, 0.2, 0.5 -> (4 + 2) / 8
    assert per[1] == pytest.approx(6 / 8)
    names = np.array(["M0", "M0", "M1", "M1", "M2", "M2"])
    m = ev.multiclass_metrics(names, probs, classes=["M0", "M1", "M2"])
    assert m["classes"] == ["M0", "M1", "M2"] and m["per_class"]["M1"]["auc"] == 0.75
    assert m["macro_auc"] == round(float(np.mean(per)), 4)
    # arg-max: 0, 0, 1, 0, 2, 1 -> 4 of 6 right
    assert m["accuracy"] == 0.6667 and m["confusion"] == [[2, 0, 0], [1, 1, 0], [0, 1, 1]]
    # a class nobody has: no AUC, left out of the macro mean
    absent = ev.multiclass_metrics([0, 0, 1, 1], np.column_stack([probs[:4], np.zeros(4)]))
    assert math.isnan(absent["per_class"]["2"]["auc"]) and absent["per_class"]["2"]["cases"] == 0
    assert absent["macro_auc"] == round(float(np.nanmean(ev.one_vs_rest_auc([0, 0, 1, 1], probs[:4, :2]))), 4)
    with pytest.raises(ValueError):
        ev.multiclass_metrics(["M3"], [[0.2, 0.3, 0.5]], classes=["M0", "M1", "M2"])


def test_brier_of_perfect_and_constant_predictions():
    y = np.array([0, 1, 1, 0, 1])
    assert ev.brier_score(y, y.astype(float)) == 0.0
    assert ev.brier_score(y, np.full(5, 0.5)) == pytest.approx(0.25)
    assert ev.brier_score(y, np.full(5, 0.6)) == pytest.approx(0.6 * 0.4)  # prevalence: p(1-p)
    with pytest.raises(ValueError):
        ev.brier_score(y, np.full(5, 1.5))


def test_ece_and_reliability_bins_by_hand():
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.1, 0.15, 0.8, 0.85, 1.0])
    r = ev.reliability_bins(y, p, bins=10)
    assert r["count"] == [0, 2, 0, 0, 0, 0, 0, 0, 2, 1]  # 1.0 falls in the last bin
    assert r["mean_predicted"][1] == pytest.approx(0.125) and r["observed_rate"][1] == 0.5
    assert r["low"][8] == pytest.approx(0.8) and r["high"][9] == 1.0 and math.isnan(r["observed_rate"][0])
    # (2 |0.125 - 0.5| + 2 |0.825 - 0.5| + 1 |1 - 1|) / 5
    assert ev.expected_calibration_error(y, p) == pytest.approx((2 * 0.375 + 2 * 0.325) / 5)


def _synthetic(n: int, seed: int):
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    true_p = 1 / (1 + np.exp(-z))
    return rng.random(n) < true_p, true_p, z


def test_calibration_intercept_slope():
    y, p, z = _synthetic(20000, 0)
    a, b = ev.calibration_intercept_slope(y, p)
    assert abs(a) < 0.05 and abs(b - 1) < 0.05
    over = 1 / (1 + np.exp(-3 * z))  # too extreme: slope about 1/3
    assert ev.calibration_intercept_slope(y, over)[1] == pytest.approx(1 / 3, abs=0.05)
    low = 1 / (1 + np.exp(-(z - 1)))  # risks underestimated: intercept about +1
    assert ev.calibration_intercept_slope(y, low)[0] == pytest.approx(1.0, abs=0.05)
    # separable: no finite slope
    assert math.isnan(ev.calibration_intercept_slope([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])[1])
    m = ev.calibration_metrics(y, p)
    assert set(m) == {"brier", "ece", "ece_bins", "calibration_intercept", "calibration_slope"}


def test_platt_scaling_improves_brier_and_ece_on_held_out_scores():
    y, _, z = _synthetic(4000, 1)
    miscalibrated = 1 / (1 + np.exp(-(3 * z + 1.5)))  # too extreme and shifted
    fit, held = slice(0, 2000), slice(2000, None)
    a, b = ev.platt_fit(y[fit], miscalibrated[fit])
    assert type(a) is float and type(b) is float  # storable in a manifest
    assert a == pytest.approx(1 / 3, abs=0.1) and b == pytest.approx(-0.5, abs=0.2)
    fixed = ev.platt_apply(miscalibrated[held], a, b)
    assert ev.brier_score(y[held], fixed) < ev.brier_score(y[held], miscalibrated[held])
    assert ev.expected_calibration_error(y[held], fixed) < 0.5 * ev.expected_calibration_error(
        y[held], miscalibrated[held])
    # order kept: discrimination is untouched
    assert ev.auc_delong(y[held], fixed)[0] == pytest.approx(ev.auc_delong(y[held], miscalibrated[held])[0])
    # Platt's smoothed targets keep the fit finite on separable data; raw scores too
    assert all(map(math.isfinite, ev.platt_fit([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])))
    # on the raw score (the logit itself) the same up to the clipping of extreme probabilities
    a2, b2 = ev.platt_fit(y[fit], 3 * z[fit] + 1.5, on_logit=False)
    assert (a2, b2) == pytest.approx((a, b), abs=0.02)
    assert ev.platt_apply(3 * z[held] + 1.5, a2, b2, on_logit=False) == pytest.approx(fixed, abs=0.02)


def test_decision_curve_net_benefit():
    y = np.array([1, 1, 0, 0, 0])
    s = np.array([0.9, 0.4, 0.6, 0.2, 0.1])
    d = ev.decision_curve(y, s, [0.0, 0.25, 0.5])
    # pt = 0.25, odds 1/3: treat-all = 0.4 - 0.6 / 3; model treats 0.9, 0.4, 0.6 -> 2/5 - (1/5) / 3
    assert d["treat_all"][1] == pytest.approx(0.4 - 0.6 / 3)
    assert d["net_benefit"][1] == pytest.approx(2 / 5 - 1 / 15)
    assert d["treat_all"][0] == pytest.approx(0.4) and d["treat_none"] == [0.0, 0.0, 0.0]
    assert d["net_benefit"][2] == pytest.approx(1 / 5 - 1 / 5)  # 0.9 and 0.6 treated, odds 1
    assert d["thresholds"] == [0.0, 0.25, 0.5]
    with pytest.raises(ValueError):
        ev.decision_curve(y, s, [1.0])


def _manifest(training_data: str = "synthetic phantoms") -> dict:
    m = {"auc": 0.8125, "auc_ci95": [0.6, 1.0], "auc_ci_method": "DeLong", "sensitivity": 0.75,
         "specificity": 0.8333, "accuracy": 0.8, "threshold": 0.42, "patients": 10, "positives": 4}
    return {
        "recipe": "toy", "version": "1.2.3", "intended_use": "Testing the card writer only.",
        "training_data": training_data, "paper": "Doe et al. 2020",
        "training": {"command": "mvi-node train toy --data D", "wall_seconds": 12.4, "seed": 3,
                     "patients_train": 30, "patients_validation": 10, "patients_test": 0, "epochs": 5},
        "variants": {
            "a": {"file": "a.onnx", "sha256": "ab" * 32, "inputs": [{"name": "image", "shape": ["N", 3]}],
                  "metrics": {"validation": {**m, "brier": 0.1234, "ece": 0.05, "ece_bins": 10,
                                             "calibration_intercept": 0.2, "calibration_slope": float("nan")},
                              "history": '[{"epoch": 1}]'}},
            "b": {"file": "b.npz", "sha256": "cd" * 32,
                  "metrics": {"validation": {**m, "auc": 0.7}, "test": {**m, "auc": 0.65, "patients": 20}}},
        },
    }


def test_model_card_intended_use_banner_and_each_variants_metrics():
    card = ev.model_card(_manifest(), method="Toy method.", limitations="Toy only.",
                         sections={"Extra": "More text."}, data_commands={"Data": "make-data D"})
    assert card.startswith("# Model card: toy 1.2.3\n")
    assert "**NOT FOR CLINICAL USE.** Training data: synthetic phantoms." in card
    assert "## Intended use\nTesting the card writer only." in card
    assert "## Method (Doe et al. 2020)\nToy method." in card
    assert "## Performance (synthetic data only)" in card
    assert "| a | validation | 10 (4) | 0.812 (0.600-1.000) | 0.4200 | 0.750 | 0.833 | 0.800 |" in card
    assert "| b | validation | 10 (4) | 0.700 (0.600-1.000)" in card and "| b | test | 20 (4) | 0.650" in card
    # calibration rows only for the set that stores them; an undefined slope reads n/a
    assert "| a | validation | 0.123 | 0.050 | 0.200 | n/a |" in card and "ECE (10 bins)" in card
    assert not re.search(r"^\| b \| \w+ \| 0\.\d{3} \| 0\.\d{3} \|", card, re.M)
    assert "- `a.onnx` (a): sha256 `" + "ab" * 32 + "`, inputs `image` ['N', 3]" in card
    assert "- `b.npz` (b): sha256" in card
    assert "- Data: `make-data D`" in card
    assert "- Command (reproduces this folder from the data above): `mvi-node train toy --data D`" in card
    assert "- Wall time: 12 s; seed 3" in card and "- Patients: 30 training, 10 validation, 0 test" in card
    assert "- Epochs: 5" in card and "- a: [{'epoch': 1}]" in card
    assert "## Limitations\nToy only." in card and card.rstrip().endswith("## Extra\nMore text.")


def test_model_card_without_synthetic_data_has_no_banner():
    card = ev.model_card(_manifest("site cohort 2019-2023, 410 patients"))
    assert "NOT FOR CLINICAL USE" not in card and "## Performance\n" in card
    assert "Training data: site cohort 2019-2023, 410 patients." in card
    assert "## Method" not in card and "Calibration" in card
    assert ev.is_synthetic({"training_data": "real", "synthetic": True})


def test_ct_card_keeps_every_fact_of_the_stored_card():
    from mvi_node.recipes.ct_ap_resnet18.card import model_card

    folder = ROOT / "models" / "ct_ap_resnet18" / "0.1.0"
    manifest = tomllib.loads((folder / "manifest.toml").read_text(encoding="utf-8"))
    stored = (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    # the card's writer now takes the cohort description `mvi-node train --cohort` gives
    card = model_card({**manifest, "synthetic": True},
                      {"source": "synth train", "kind": "synth", "test_cohort": {"source": "synth eval"}})
    # the metrics table, the files with their sha256, the epoch history, method and limitations, word for word
    for line in stored.splitlines():
        if line.startswith(("| image_only | ", "| clinical | ", "- `model", "- image_only: [", "- clinical: [")):
            assert line in card, line
    start, end = stored.index("## Intended use"), stored.index("## Files")
    assert stored[start:end] in card
    assert stored[stored.index("## Limitations"):stored.index("## End-to-end")].strip() in card
    for fact in ("**NOT FOR CLINICAL USE.**", manifest["training"]["command"], "Wall time: 1728 s; seed 0",
                 "Patients: 254 training, 64 validation, 120 test", manifest["training"]["optimizer"],
                 "Slices per patient per epoch: 3", "early stop on validation AUC",
                 "`--max-minutes` cuts an epoch short", "split by patient"):
        assert fact in card, fact
    # the stored manifest has no calibration: no calibration table
    assert "Brier" not in card


def test_isotonic_recalibration_is_plain_floats_and_matches_scikit_learn():
    import json

    from sklearn.isotonic import IsotonicRegression

    y, _, z = _synthetic(4000, 2)
    miscalibrated = 1 / (1 + np.exp(-(3 * z + 1.5)))
    fit, held = slice(0, 2000), slice(2000, None)
    params = ev.isotonic_fit(y[fit], miscalibrated[fit])
    assert set(params) == {"x", "y"} and len(params["x"]) == len(params["y"]) > 2
    assert all(type(v) is float for v in params["x"] + params["y"])
    assert json.loads(json.dumps(params)) == params  # storable in a manifest as it stands
    assert np.all(np.diff(params["x"]) > 0) and np.all(np.diff(params["y"]) >= 0)
    reference = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(miscalibrated[fit], y[fit])
    fixed = ev.isotonic_apply(miscalibrated[held], params)
    assert fixed == pytest.approx(reference.predict(miscalibrated[held]), abs=1e-12)
    assert ev.brier_score(y[held], fixed) < ev.brier_score(y[held], miscalibrated[held])
    assert ev.expected_calibration_error(y[held], fixed) < 0.5 * ev.expected_calibration_error(
        y[held], miscalibrated[held])
    # outside the fitted range: held at the end values
    assert ev.isotonic_apply([0.0, 1.0], params).tolist() == [params["y"][0], params["y"][-1]]
    with pytest.raises(ValueError):
        ev.isotonic_apply([0.5], {"x": [], "y": []})


def test_paired_delong_identical_better_and_reversed_scores():
    rng = np.random.default_rng(4)
    y = rng.random(300) < 0.4
    good = rng.normal(y * 2.0, 1.0)
    weak = rng.normal(y * 0.3, 1.0)
    same = ev.delong_paired(y, good, good)
    assert same["p_value"] == 1.0 and same["z"] == 0.0 and same["difference"] == 0.0
    assert same["auc_a"] == same["auc_b"] == ev.auc_delong(y, good)[0]
    better = ev.delong_paired(y, good, weak)
    assert better["p_value"] < 1e-6 and better["z"] > 5 and better["ci"][0] > 0
    assert better["difference"] == pytest.approx(better["auc_a"] - better["auc_b"])
    swapped = ev.delong_paired(y, weak, good)
    assert swapped["difference"] == pytest.approx(-better["difference"])
    assert swapped["p_value"] == pytest.approx(better["p_value"])
    # reversed scores: AUC 1 - a, components perfectly anti-correlated, Var(a - b) = 4 Var(a)
    auc, var = ev.auc_delong(y, good)
    rev = ev.delong_paired(y, good, -good)
    assert rev["auc_b"] == pytest.approx(1 - auc) and rev["variance"] == pytest.approx(4 * var)
    assert set(better) >= {"auc_a", "auc_b", "difference", "z", "p_value", "ci"}
    with pytest.raises(ValueError):
        ev.delong_paired([1, 0, 0], [0.9, 0.2, 0.1], [0.8, 0.3, 0.1])


def test_at_threshold_adds_ppv_npv_and_leaves_undefined_ratios_empty():
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.6, 0.2, 0.7, 0.4, 0.1, 0.3])
    op = ev.at_threshold(y, s, 0.5)
    assert (op["tp"], op["fp"], op["tn"], op["fn"]) == (2, 1, 3, 1)
    assert op["ppv"] == pytest.approx(2 / 3) and op["npv"] == pytest.approx(3 / 4)
    assert op["sensitivity"] == pytest.approx(2 / 3) and op["accuracy"] == pytest.approx(5 / 7)
    none_called = ev.at_threshold(y, s, 0.95)
    assert none_called["ppv"] is None and none_called["npv"] == pytest.approx(4 / 7)
