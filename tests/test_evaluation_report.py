"""mvi_node.evaluation.report: a cohort's predictions -> predictions.csv, metrics.json,
figures, report.pdf and a self-contained report.html (issue #13), checked against
scikit-learn on the written CSV and rendered in headless Chromium."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, confusion_matrix, roc_auc_score, roc_curve

from mvi_node.evaluation.report import METRICS_KEYS, SIZE_GROUPS, evaluate_predictions, exam_hash

SECRET_ID = "PAT-0042-SECRET"
SECRET_NAME = "DOE^JANE"
MANUFACTURERS = ("SIEMENS", "GE MEDICAL SYSTEMS", "Philips")
MODEL = {"recipe": "ct_ap_resnet18", "version": "0.1.0", "variant": "image_only", "sha256": "ab" * 32,
         "intended_use": "Research on the pipeline only.", "training_data": "synthetic phantoms",
         "calibration": {"method": "platt", "a": 0.9, "b": -0.1}}
OPERATING_KEYS = {"threshold", "sensitivity", "specificity", "accuracy", "ppv", "npv", "tp", "fp", "tn", "fn"}


def cohort(n: int = 200, seed: int = 0, strength: float = 1.2):
    """Seeded synthetic predictions: labels, a probability that separates them, sizes,
    manufacturers, and identifiers that must never be written anywhere."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.4
    p = 1 / (1 + np.exp(-(rng.normal(y * strength, 1.0) - 0.6)))
    rows = [{"exam": i + 1, "mvi": bool(y[i]), "probability": float(p[i]), "roi_source": "SEG",
             "outcome": "evaluated", "max_diameter_mm": float(rng.uniform(10, 90)),
             "manufacturer": MANUFACTURERS[i % 3], "patient_id": SECRET_ID, "patient_name": SECRET_NAME,
             "accession": "ACC123456"} for i in range(n)]
    failed = [{"exam": n + 1, "outcome": "no tumour ROI", "patient_id": SECRET_ID,
               "reasons": ["no SEG or RTSTRUCT for series 1.2.826.0.1.3680043.8.498.1", "no ROI marker"]},
              {"exam": n + 2, "outcome": "no eligible series", "reasons": "no arterial phase", "mvi": 1}]
    return rows, failed, y, p


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    rows, failed, y, p = cohort()
    rng = np.random.default_rng(1)
    weaker = [{"exam": r["exam"], "probability": float(np.clip(r["probability"] + rng.normal(0, 0.25), 0, 1))}
              for r in rows]
    metrics = evaluate_predictions(rows, label="mvi", threshold=0.5, model=MODEL, failed=failed, out_dir=out,
                                   compare={"model": {"recipe": "other_recipe", "version": "2.0"}, "rows": weaker,
                                            "threshold": 0.45}, bootstrap=1000, seed=0)
    return out, metrics


def test_files_and_metrics_keys(report):
    out, metrics = report
    for name in ("predictions.csv", "metrics.json", "report.html", "report.pdf", "figures/roc.png",
                 "figures/calibration.png", "figures/decision_curve.png", "figures/confusion.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 1000, name
    for png in (out / "figures").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "report.pdf").read_bytes()[:5] == b"%PDF-"
    stored = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert stored == metrics and tuple(stored) == METRICS_KEYS
    assert stored["n"] == 200 and stored["not_evaluated"] == 2
    assert set(stored["at_model_threshold"]) == set(stored["at_youden"]) == OPERATING_KEYS
    assert stored["at_model_threshold"]["threshold"] == 0.5


def test_auc_is_what_scikit_learn_computes_from_predictions_csv(report):
    out, metrics = report
    table = read_csv(out / "predictions.csv")
    assert list(table[0])[:9] == ["exam", "mvi", "probability", "decision", "roi_source", "outcome", "reasons",
                                  "max_diameter_mm", "manufacturer"]
    assert len(table) == 202 and [r["exam"] for r in table] == [str(i) for i in range(1, 203)]
    scored = [r for r in table if r["probability"]]
    y = np.array([int(r["mvi"]) for r in scored])
    p = np.array([float(r["probability"]) for r in scored])
    assert metrics["auc"] == roc_auc_score(y, p)
    assert metrics["auc_ci_low"] < metrics["auc"] < metrics["auc_ci_high"]
    assert metrics["positives"] == int(y.sum())
    assert metrics["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-15)
    tn, fp, fn, tp = confusion_matrix(y, p >= 0.5).ravel()
    op = metrics["at_model_threshold"]
    assert (op["tp"], op["fp"], op["tn"], op["fn"]) == (tp, fp, tn, fn)
    assert op["sensitivity"] == tp / (tp + fn) and op["specificity"] == tn / (tn + fp)
    assert op["ppv"] == tp / (tp + fp) and op["npv"] == tn / (tn + fn) and op["accuracy"] == (tp + tn) / len(y)
    assert [int(r["decision"]) for r in scored] == (p >= 0.5).astype(int).tolist()
    # Youden on this cohort: the threshold of maximal tpr - fpr on scikit-learn's ROC
    fpr, tpr, thr = roc_curve(y, p)
    assert max(tpr - fpr) == pytest.approx(metrics["at_youden"]["sensitivity"]
                                           + metrics["at_youden"]["specificity"] - 1)
    assert metrics["at_youden"]["threshold"] in thr
    # the exams not evaluated: listed, no probability, reasons kept (the UID masked)
    failed = [r for r in table if not r["probability"]]
    assert [r["outcome"] for r in failed] == ["no tumour ROI", "no eligible series"]
    assert failed[0]["reasons"] == "no SEG or RTSTRUCT for series [uid]; no ROI marker"
    assert failed[1]["mvi"] == "1" and failed[0]["mvi"] == ""
    assert metrics["calibration_slope"] > 0 and metrics["ece"] >= 0


def test_subgroups_by_tumour_size_and_manufacturer(report):
    out, metrics = report
    table = [r for r in read_csv(out / "predictions.csv") if r["probability"]]
    sizes = metrics["by_tumour_size"]
    assert list(sizes) == list(SIZE_GROUPS) and sum(g["n"] for g in sizes.values()) == 200
    small = [r for r in table if float(r["max_diameter_mm"]) < 30]
    assert sizes["<30"]["n"] == len(small)
    assert sizes["<30"]["auc"] == roc_auc_score([int(r["mvi"]) for r in small],
                                                [float(r["probability"]) for r in small])
    assert set(metrics["by_manufacturer"]) == set(MANUFACTURERS)
    for g in (*sizes.values(), *metrics["by_manufacturer"].values()):
        assert g["auc_ci_low"] <= g["auc"] <= g["auc_ci_high"]
        assert set(g) == set(METRICS_KEYS) - {"by_tumour_size", "by_manufacturer", "not_evaluated", "compare"}


def test_one_class_and_empty_subgroups_report_counts_and_no_auc(tmp_path):
    rows, _, _, _ = cohort(60, seed=3)
    for r in rows:  # every large tumour MVI-negative, no tumour 30-50 mm, one exam of a fourth vendor
        d = r["max_diameter_mm"]
        r["max_diameter_mm"] = 80.0 if d > 50 else 10.0 if d < 30 else 20.0
        if d > 50:
            r["mvi"] = False
    rows[0].update(manufacturer="Canon", max_diameter_mm=None)
    rows[1]["manufacturer"] = None
    m = evaluate_predictions(rows, label="mvi", threshold=0.5, model=MODEL, out_dir=tmp_path, bootstrap=50)
    large, mid = m["by_tumour_size"][">50"], m["by_tumour_size"]["30-50"]
    assert large["n"] > 0 and large["positives"] == 0
    assert large["auc"] is None and large["auc_ci_low"] is None and large["at_youden"] is None
    assert large["at_model_threshold"]["sensitivity"] is None and large["brier"] is not None
    assert mid == {**{k: None for k in mid}, "n": 0, "positives": 0}
    assert m["by_tumour_size"]["unknown"]["n"] == 1
    assert m["by_manufacturer"]["Canon"]["n"] == 1 and m["by_manufacturer"]["Canon"]["auc"] is None
    assert m["by_manufacturer"]["unknown"]["n"] == 1
    assert "NaN" not in (tmp_path / "metrics.json").read_text()  # strict JSON: undefined is null


def test_paired_comparison_in_metrics_and_page(report):
    out, metrics = report
    c = metrics["compare"]
    assert c["model"] == {"recipe": "other_recipe", "version": "2.0"} and c["n"] == 200
    assert c["auc_a"] == pytest.approx(metrics["auc"]) and c["auc_b"] < c["auc_a"]
    assert c["difference"] == pytest.approx(c["auc_a"] - c["auc_b"]) and c["p_value"] < 0.05
    assert c["ci"][0] < c["difference"] < c["ci"][1] and c["method"] == "DeLong, paired"
    assert c["b"]["threshold"] == 0.45 and c["b"]["auc"] == pytest.approx(c["auc_b"])
    table = read_csv(out / "predictions.csv")
    assert "probability_b" in table[0] and "decision_b" in table[0]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Comparison with other_recipe 2.0" in page and "paired DeLong" in page


def test_identical_models_compare_with_p_one(tmp_path):
    rows, _, _, _ = cohort(80, seed=5)
    m = evaluate_predictions(rows, label="mvi", threshold=0.5, model=MODEL, out_dir=tmp_path, bootstrap=0,
                             compare={"model": {"recipe": "copy"}, "rows": rows})
    assert m["compare"]["p_value"] == 1.0 and m["compare"]["difference"] == 0.0


def test_no_identifier_reaches_any_output(report):
    out, _ = report
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in (SECRET_ID, SECRET_NAME, "ACC123456", "1.2.826.0.1.3680043"):
                assert secret.encode() not in data, (path.name, secret)
    header = read_csv(out / "predictions.csv")[0]
    assert not any(re.search("patient|accession|name", c) for c in header)


def test_refuses_identifier_like_exam_names_and_columns(tmp_path):
    rows, _, _, _ = cohort(20, seed=6)
    for bad in ("PAT001", "1234567890", SECRET_NAME, "", None, True, -1):
        broken = [dict(rows[0], exam=bad)] + rows[1:]
        with pytest.raises(ValueError):
            evaluate_predictions(broken, label="mvi", threshold=0.5, model=MODEL, out_dir=tmp_path, bootstrap=0)
    with pytest.raises(ValueError, match="identifier"):
        evaluate_predictions(rows, label="mvi", threshold=0.5, model=MODEL, out_dir=tmp_path, bootstrap=0,
                             label_columns=["patient_id"])
    hashed = [dict(r, exam=exam_hash(f"accession-{i}", salt="s")) for i, r in enumerate(rows)]
    m = evaluate_predictions(hashed, label="mvi", threshold=0.5, model=MODEL, out_dir=tmp_path, bootstrap=0)
    assert m["n"] == 20 and len(exam_hash("x")) == 16
    assert "accession-" not in (tmp_path / "predictions.csv").read_text()


def test_malformed_predictions_are_refused(tmp_path):
    rows, _, _, _ = cohort(20, seed=7)
    cases = [[dict(rows[0], probability=1.5)] + rows[1:], [dict(rows[0], mvi="maybe")] + rows[1:],
             rows + [rows[0]], [dict(r, mvi=False) for r in rows]]
    for broken in cases:
        with pytest.raises(ValueError):
            evaluate_predictions(broken, label="mvi", threshold=0.5, model=MODEL, out_dir=tmp_path, bootstrap=0)


def test_page_is_self_contained_with_identity_banner_and_failures(report, tmp_path):
    out, _ = report
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == 4
    assert not re.search(r'(src|href)="(?!data:)', page) and "http://" not in page and "https://" not in page
    assert "NOT FOR CLINICAL USE" in page and MODEL["intended_use"] in page and "ab" * 32 in page
    assert 'data-figures-expected="4"' in page
    assert "no tumour ROI" in page and "no SEG or RTSTRUCT for series [uid]" in page and "no arterial phase" in page
    for heading in ("By tumour size", "By scanner manufacturer", "Operating points", "Not evaluated (2)"):
        assert heading in page
    rows, _, _, _ = cohort(40, seed=8)
    evaluate_predictions(rows, label="mvi", threshold=0.5, out_dir=tmp_path, bootstrap=0, pdf=False,
                         model={**MODEL, "training_data": "site cohort 2019-2023"})
    real = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "NOT FOR CLINICAL USE" not in real and "Every exam was evaluated." in real
    assert not (tmp_path / "report.pdf").exists()


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120)


def test_report_renders_in_headless_chromium_with_its_figures(report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (scripts/setup.sh test installs Debian's chromium)")
    out, _ = report
    page = out / "report.html"
    dom = _headless(browser, tmp_path / "profile", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    assert 'data-figures-loaded="4"' in body and 'data-figures-expected="4"' in body, body
    # the count is real: a figure whose data do not decode is not counted
    broken = tmp_path / "broken.html"
    text = page.read_text(encoding="utf-8")
    start = text.index("data:image/png;base64,") + len("data:image/png;base64,")
    broken.write_text(text[:start] + "bm90IGEgcG5n" + text[text.index('"', start):], encoding="utf-8")
    dom = _headless(browser, tmp_path / "profile", "--dump-dom", broken.as_uri())
    assert 'data-figures-loaded="3"' in re.search(r"<body[^>]*>", dom.stdout).group(0)
    shot = tmp_path / "report.png"
    run = _headless(browser, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,3000", page.as_uri())
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    assert shot.stat().st_size > 100_000
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 3000)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 500  # figures, not a blank page
