"""The trainers' shared steps (mvi_node.recipes.training): synthetic-cohort test and
Platt calibration on the validation split, as both recipes' pipelines use them."""

from __future__ import annotations

import numpy as np

from mvi_node.recipes.training import MIN_CALIBRATION_EXAMS, platt_on_validation, synthetic_cohort


def test_platt_on_validation_calibrates_overconfident_scores_and_refuses_too_little():
    rng = np.random.default_rng(0)
    true_p = rng.uniform(0.1, 0.9, 400)
    labels = (rng.random(400) < true_p).astype(int)
    over = 1 / (1 + np.exp(-3 * np.log(true_p / (1 - true_p))))  # same ranking, far too confident
    calibration, table = platt_on_validation(labels, over, {"source": "cohort.csv"}, applies_to="P(MVI)")
    assert table["method"] == "platt" and table["applies_to"] == "P(MVI)"
    assert "the validation split (400 exams) of cohort.csv" == table["fitted_on"]
    assert 0.2 < table["a"] < 0.5  # undoes the factor 3 on the logit
    few = MIN_CALIBRATION_EXAMS - 1
    assert platt_on_validation(labels[:few], over[:few], {}) == (None, None)
    assert platt_on_validation(np.ones(50), over[:50], {}) == (None, None)  # one class only
    assert calibration is not None


def test_a_cohort_is_synthetic_only_when_its_test_cohort_is_too():
    assert synthetic_cohort({"kind": "synth"})
    assert not synthetic_cohort({"kind": "synth", "test_cohort": {"kind": "csv"}})
    assert not synthetic_cohort({"kind": "csv"})


def test_both_recipe_pipelines_import_the_shared_steps():
    from mvi_node.recipes.ct_ap_resnet18 import pipeline as ct
    from mvi_node.recipes.mr_3seq_grade import pipeline as mr

    calibration, table = mr._calibrate(np.array([0, 1] * 10), np.linspace(0.1, 0.9, 20), {"source": "s"})
    assert table["applies_to"].startswith("P(MVI) = P(M1) + P(M2)") and calibration is not None
    assert ct.platt_on_validation is mr.platt_on_validation
