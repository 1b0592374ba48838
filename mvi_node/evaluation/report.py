"""The evaluation report of one cohort: a served model's predictions, one row per exam,
turned into ``predictions.csv``, ``metrics.json``, figures and a self-contained
``report.html`` (issue #13, ``mvi-node evaluate``).

This module knows nothing of the engine or the cohort format: the ``evaluate`` command
runs the model, and hands :func:`evaluate_predictions` plain dicts.

Inputs
------
``rows`` (the exams the model evaluated), each a mapping with

- ``exam``: the exam's name in every output, a row number (``int`` or decimal string of
  at most 6 digits) or a lower-case hex hash of 16 to 64 digits (:func:`exam_hash`);
  anything else is refused, so a patient ID or accession number cannot become an exam
  name;
- the label column named by ``label`` (``mvi``): 0 / 1, ``True`` / ``False`` or the
  strings ``"0"``, ``"1"``, ``"true"``, ``"false"``, ``"yes"``, ``"no"``;
- ``probability`` in [0, 1]; ``decision`` (optional; ``probability >= threshold``
  when absent); ``roi_source``; ``outcome``;
- optional ``max_diameter_mm`` (tumour size groups) and ``manufacturer``;
- optional further label columns named in ``label_columns`` (written as they are).

``failed`` (exams that could not be evaluated): ``exam``, ``outcome``, ``reasons`` (a
string or a list of strings), optionally the label and the optional columns above.

Only these columns are read: anything else in a row (a ``patient_id``, a name, ...)
never reaches an output file. Free text (``outcome``, ``roi_source``, ``reasons``,
``manufacturer``) has DICOM-UID-like strings replaced by ``[uid]``.

Outputs in ``out_dir``
----------------------
- ``predictions.csv``: one row per exam (evaluated, then those that were not, in exam
  order): ``exam``, the label, the further label columns, ``probability`` (full
  precision), ``decision`` (1 / 0), ``roi_source``, ``outcome``, ``reasons``,
  ``max_diameter_mm``, ``manufacturer``, and with a comparison ``probability_b``,
  ``decision_b``; an exam that was not evaluated has an empty ``probability``.
- ``metrics.json``: the keys of :data:`METRICS_KEYS`, in that order (see
  :func:`cohort_figures` for one group's figures); ``compare`` only with a second model.
- ``figures/roc.png``, ``figures/calibration.png``, ``figures/decision_curve.png``,
  ``figures/confusion.png`` (200 dpi, for papers) and ``report.pdf`` (the same figures,
  vector, one per page).
- ``report.html``: one page, no external resource (figures as ``data:`` URIs, inline
  style and script): model identity and intended use, a NOT FOR CLINICAL USE banner
  when the training data are synthetic, the whole-cohort figures, the operating points,
  the four figures, the subgroup tables, the comparison, the exams not evaluated with
  their reasons. On load its script writes the number of decoded figures to
  ``document.body.dataset.figuresLoaded`` (``data-figures-loaded``) beside
  ``data-figures-expected``.

Statistics: AUC from scikit-learn (``roc_auc_score``), its 95% CI from DeLong's
variance, operating points from ``confusion_matrix``, Brier from ``brier_score_loss``,
calibration intercept / slope from unpenalised logistic fits; the ROC and calibration
bands are percentiles over ``bootstrap`` resamples of the exams (seeded).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from scipy.special import expit
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score, roc_curve

from mvi_node.evaluation.calibration import (_logistic, _separated, brier_score, calibration_intercept_slope,
                                             decision_curve, expected_calibration_error, logit)
from mvi_node.evaluation.card import is_synthetic
from mvi_node.evaluation.metrics import at_threshold, auc_ci, delong_paired, youden_threshold

#: metrics.json's top-level keys, in order (``compare`` only when a second model is given)
METRICS_KEYS = ("n", "positives", "auc", "auc_ci_low", "auc_ci_high", "at_model_threshold", "at_youden", "brier",
                "calibration_intercept", "calibration_slope", "ece", "by_tumour_size", "by_manufacturer",
                "not_evaluated", "compare")

#: tumour-size groups on the largest diameter in mm: < 30, 30 to 50 inclusive, > 50
SIZE_GROUPS = ("<30", "30-50", ">50")
UNKNOWN = "unknown"

#: the figures written under figures/ and embedded in report.html, in page order
FIGURES = ("roc", "calibration", "decision_curve", "confusion")

#: the model identity the page shows (nothing else of the mapping is read)
MODEL_KEYS = ("recipe", "version", "variant", "sha256", "intended_use", "training_data", "calibration", "synthetic")

ECE_BINS = 10

_EXAM = re.compile(r"^(?:\d{1,6}|[0-9a-f]{16,64})$")
_UID = re.compile(r"\b\d+(?:\.\d+){3,}\b")
_IDENTIFYING_COLUMN = re.compile(r"patient|name|birth|accession|mrn|address|phone|(^|_)id($|_)|uid", re.I)
_TRUE, _FALSE = {"1", "true", "yes", "positive"}, {"0", "false", "no", "negative"}


# ---------------------------------------------------------------------------- inputs

def exam_hash(identifier: str, salt: str = "") -> str:
    """A 16-hex-digit name for an exam that must not be named by its identifier
    (sha256 of ``salt`` + identifier; keep the salt out of the report)."""
    return hashlib.sha256((salt + str(identifier)).encode("utf-8")).hexdigest()[:16]


def _exam_name(value: Any) -> str:
    if isinstance(value, bool):
        raise ValueError("an exam is named by a row number or a hash, not a boolean")
    if isinstance(value, (int, np.integer)):
        if not 0 <= value < 10**6:
            raise ValueError("an exam row number lies in 0..999999")
        return str(int(value))
    text = str(value).strip() if value is not None else ""
    if not _EXAM.match(text):
        raise ValueError("an exam is named by a row number or a lower-case hex hash (exam_hash), "
                         "never by an identifier; got a value of another form")
    return text


def _label_value(value: Any, exam: str, label: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        if value in (0, 1):
            return int(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return 1
        if text in _FALSE:
            return 0
    raise ValueError(f"exam {exam}: the label {label!r} is not 0/1/true/false")


def _optional_label(value: Any, exam: str, label: str) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return _label_value(value, exam, label)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "; ".join(_text(v) for v in value if v is not None and str(v) != "")
    return _UID.sub("[uid]", str(value)).strip()


def _diameter(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        d = float(value)
    except (TypeError, ValueError):
        return None
    return d if math.isfinite(d) and d >= 0 else None


def size_group(diameter_mm: float | None) -> str:
    """``"<30"``, ``"30-50"`` (both ends included), ``">50"``, or ``"unknown"``."""
    if diameter_mm is None:
        return UNKNOWN
    return SIZE_GROUPS[0] if diameter_mm < 30 else SIZE_GROUPS[1] if diameter_mm <= 50 else SIZE_GROUPS[2]


def _check_columns(label: str, label_columns: Sequence[str]) -> None:
    for name in (label, *label_columns):
        if not isinstance(name, str) or not name.strip():
            raise ValueError("label columns are named by non-empty strings")
        if _IDENTIFYING_COLUMN.search(name):
            raise ValueError(f"column {name!r} looks like an identifier; it is never written to a report")
    reserved = {"exam", "probability", "decision", "roi_source", "outcome", "reasons", "max_diameter_mm",
                "manufacturer", "probability_b", "decision_b"}
    clash = reserved & {label, *label_columns}
    if clash or len({label, *label_columns}) != 1 + len(label_columns):
        raise ValueError(f"label columns must be distinct and not one of the report's own columns: {sorted(clash)}")


def _probability(value: Any, exam: str) -> float:
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"exam {exam}: probability is not a number") from None
    if not (math.isfinite(p) and 0.0 <= p <= 1.0):
        raise ValueError(f"exam {exam}: probability must lie in [0, 1]")
    return p


def _decision(value: Any, p: float, threshold: float) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        return int(p >= threshold)
    if isinstance(value, str):
        return _label_value(value, "", "decision")
    return int(bool(value))


def _read_rows(rows: Iterable[Mapping[str, Any]], label: str, label_columns: Sequence[str],
               threshold: float) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        exam = _exam_name(row.get("exam"))
        p = _probability(row.get("probability"), exam)
        out.append({
            "exam": exam, label: _label_value(row.get(label), exam, label),
            **{c: row.get(c) for c in label_columns},
            "probability": p, "decision": _decision(row.get("decision"), p, threshold),
            "roi_source": _text(row.get("roi_source")), "outcome": _text(row.get("outcome", "evaluated")),
            "reasons": _text(row.get("reasons")), "max_diameter_mm": _diameter(row.get("max_diameter_mm")),
            "manufacturer": _text(row.get("manufacturer")),
        })
    return out


def _read_failed(failed: Iterable[Mapping[str, Any]], label: str, label_columns: Sequence[str]) -> list[dict]:
    out = []
    for row in failed:
        exam = _exam_name(row.get("exam"))
        out.append({
            "exam": exam, label: _optional_label(row.get(label), exam, label),
            **{c: row.get(c) for c in label_columns},
            "probability": None, "decision": None, "roi_source": _text(row.get("roi_source")),
            "outcome": _text(row.get("outcome")) or "not evaluated", "reasons": _text(row.get("reasons")),
            "max_diameter_mm": _diameter(row.get("max_diameter_mm")), "manufacturer": _text(row.get("manufacturer")),
        })
    return out


def _with_labels(rows: Iterable[Mapping[str, Any]], label: str, known: Mapping[str, int]) -> list[dict]:
    """The compared model's rows, given the cohort's label where they lack it."""
    out = []
    for row in rows:
        row = dict(row)
        if row.get(label) is None:
            try:
                row[label] = known.get(_exam_name(row.get("exam")))
            except ValueError:
                pass
        out.append(row)
    return out


def _exam_order(rows: list[dict]) -> list[dict]:
    if all(r["exam"].isdigit() for r in rows):
        return sorted(rows, key=lambda r: int(r["exam"]))
    return rows


# ---------------------------------------------------------------------------- statistics

def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def cohort_figures(labels: Any, probabilities: Any, threshold: float) -> dict[str, Any]:
    """One group's figures: ``n``, ``positives``, ``auc`` (scikit-learn) with
    ``auc_ci_low`` / ``auc_ci_high`` (95%, DeLong), ``at_model_threshold`` and
    ``at_youden`` (:func:`~mvi_node.evaluation.metrics.at_threshold`: threshold,
    sensitivity, specificity, accuracy, ppv, npv, tp, fp, tn, fn), ``brier``,
    ``calibration_intercept``, ``calibration_slope``, ``ece`` (10 bins). ``None`` where
    a figure is undefined: with one class only there is no AUC, Youden point or
    calibration fit; an empty group has only its zero counts."""
    y = np.asarray(labels).astype(bool)
    p = np.asarray(probabilities, float)
    n, positives = int(len(y)), int(y.sum())
    out: dict[str, Any] = {"n": n, "positives": positives, "auc": None, "auc_ci_low": None, "auc_ci_high": None,
                           "at_model_threshold": None, "at_youden": None, "brier": None,
                           "calibration_intercept": None, "calibration_slope": None, "ece": None}
    if n == 0:
        return out
    out["at_model_threshold"] = at_threshold(y, p, threshold)
    out["brier"] = brier_score(y, p)
    out["ece"] = expected_calibration_error(y, p, ECE_BINS)
    if 0 < positives < n:
        auc = float(roc_auc_score(y, p))
        _, lo, hi = auc_ci(y, p)
        out.update(auc=auc, auc_ci_low=min(lo, auc), auc_ci_high=max(hi, auc))
        out["at_youden"] = at_threshold(y, p, youden_threshold(y, p))
        a, b = calibration_intercept_slope(y, p)
        out.update(calibration_intercept=_finite(a), calibration_slope=_finite(b))
    return out


def _groups(keys: Sequence[str], y: np.ndarray, p: np.ndarray, threshold: float,
            order: Sequence[str] | None = None) -> dict[str, Any]:
    keys_arr = np.asarray(keys, dtype=object)
    names = list(order or [])
    seen = sorted(set(keys) - set(names), key=lambda k: (k == UNKNOWN, -int((keys_arr == k).sum()), k))
    return {k: cohort_figures(y[keys_arr == k], p[keys_arr == k], threshold) for k in names + seen}


def _bootstrap(y: np.ndarray, p: np.ndarray, resamples: int, seed: int) -> dict[str, Any]:
    """ROC (TPR on a fixed FPR grid) and logistic calibration curve per resample of the
    exams; resamples with one class (and, for calibration, separable ones) are skipped."""
    fpr_grid = np.linspace(0.0, 1.0, 101)
    lo_p, hi_p = max(float(p.min()), 0.005), min(float(p.max()), 0.995)
    cal_grid = np.linspace(lo_p, hi_p, 80) if hi_p > lo_p else np.array([lo_p])
    rng = np.random.default_rng(seed)
    n = len(y)
    tprs, cals = [], []
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        yb, pb = y[idx], p[idx]
        if yb.all() or not yb.any():
            continue
        fpr, tpr, _ = roc_curve(yb, pb)
        tprs.append(tpr[np.searchsorted(fpr, fpr_grid, side="right") - 1])
        lp = logit(pb)
        if not _separated(lp, yb.astype(float)):
            coef, intercept = _logistic(lp[:, None], yb.astype(float))
            cals.append(expit(intercept + coef[0] * logit(cal_grid)))
    out: dict[str, Any] = {"fpr": fpr_grid, "cal_grid": cal_grid, "used_roc": len(tprs), "used_cal": len(cals)}
    if tprs:
        out["tpr_band"] = np.percentile(np.array(tprs), [2.5, 97.5], axis=0)
    if cals:
        out["cal_band"] = np.percentile(np.array(cals), [2.5, 97.5], axis=0)
    return out


def _compare(a_rows: list[dict], b_rows: list[dict], label: str, b_threshold: float,
             b_model: Mapping[str, Any]) -> dict[str, Any]:
    b_by_exam = {r["exam"]: r for r in b_rows}
    paired = [(r[label], r["probability"], b_by_exam[r["exam"]]["probability"]) for r in a_rows
              if r["exam"] in b_by_exam]
    y = np.array([t[0] for t in paired], bool)
    pa, pb = np.array([t[1] for t in paired], float), np.array([t[2] for t in paired], float)
    out: dict[str, Any] = {"model": _identity(b_model), "n": int(len(y)), "positives": int(y.sum()),
                           "method": "DeLong, paired", "auc_a": None, "auc_b": None, "difference": None, "z": None,
                           "p_value": None, "ci": None, "reason": None}
    try:
        test = delong_paired(y, pa, pb)
    except ValueError as e:
        out["reason"] = str(e)
    else:
        out.update({k: test[k] for k in ("auc_a", "auc_b", "difference", "z", "p_value")},
                   ci=[float(v) for v in test["ci"]])
    yb = np.array([r[label] for r in b_rows], bool)
    out["b"] = cohort_figures(yb, np.array([r["probability"] for r in b_rows], float), b_threshold)
    out["b"]["threshold"] = float(b_threshold)
    return out


def _identity(model: Mapping[str, Any] | None) -> dict[str, Any]:
    model = model or {}
    return {k: model[k] for k in MODEL_KEYS if k in model and model[k] is not None}


# ---------------------------------------------------------------------------- figures

def _new_figure(width: float = 5.0, height: float = 4.6) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _roc_figure(y, p, threshold, figures, boot, b: tuple[str, np.ndarray, np.ndarray] | None) -> Figure:
    fig, ax = _new_figure()
    if "tpr_band" in boot:
        ax.fill_between(boot["fpr"], boot["tpr_band"][0], boot["tpr_band"][1], step="post", color="C0", alpha=0.2,
                        label=f"95% bootstrap band ({boot['used_roc']} resamples)")
    fpr, tpr, _ = roc_curve(y, p)
    ax.plot(fpr, tpr, color="C0", drawstyle="steps-post",
            label=f"AUC {figures['auc']:.3f} (95% CI {figures['auc_ci_low']:.3f}-{figures['auc_ci_high']:.3f}, DeLong)")
    for key, marker, name in (("at_model_threshold", "o", "model threshold"), ("at_youden", "s", "Youden")):
        op = figures[key]
        if op and op["sensitivity"] is not None and op["specificity"] is not None:
            ax.plot(1 - op["specificity"], op["sensitivity"], marker, color="C3" if marker == "o" else "C2",
                    label=f"{name} {op['threshold']:.3f}")
    if b is not None:
        fpr_b, tpr_b, _ = roc_curve(b[1], b[2])
        ax.plot(fpr_b, tpr_b, color="C1", drawstyle="steps-post", label=b[0])
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity", ylabel="sensitivity", title="ROC curve")
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize=7)
    return fig


def _calibration_figure(y, p, boot) -> Figure:
    fig, ax = _new_figure()
    grid = boot["cal_grid"]
    if "cal_band" in boot:
        ax.fill_between(grid, boot["cal_band"][0], boot["cal_band"][1], color="C0", alpha=0.2,
                        label=f"95% bootstrap band ({boot['used_cal']} resamples)")
    lp = logit(p)
    if not _separated(lp, y.astype(float)):
        coef, intercept = _logistic(lp[:, None], y.astype(float))
        ax.plot(grid, expit(intercept + coef[0] * logit(grid)), color="C0",
                label="logistic calibration curve")
    bins = min(ECE_BINS, max(2, len(np.unique(p))))
    observed, predicted = calibration_curve(y, p, n_bins=bins, strategy="quantile")
    ax.plot(predicted, observed, "o", color="C1", ms=4, label="observed rate by quantile of risk")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="ideal")
    counts, edges = np.histogram(p, bins=40, range=(0.0, 1.0))
    ax.bar(edges[:-1], counts / max(int(counts.max()), 1) * 0.15, width=edges[1] - edges[0], align="edge",
           color="grey", alpha=0.35)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability", ylabel="observed proportion",
           title="Calibration")
    ax.set_aspect("equal")
    ax.legend(loc="upper left", fontsize=7)
    return fig


def _decision_figure(y, p, threshold, b: tuple[str, np.ndarray, np.ndarray] | None) -> Figure:
    fig, ax = _new_figure(5.6, 4.2)
    pts = np.round(np.arange(0.01, 1.0, 0.01), 2)
    d = decision_curve(y, p, pts)
    ax.plot(d["thresholds"], d["net_benefit"], color="C0", label="model")
    if b is not None:
        ax.plot(pts, decision_curve(b[1], b[2], pts)["net_benefit"], color="C1", label=b[0])
    ax.plot(d["thresholds"], d["treat_all"], color="C3", ls="--", label="treat all")
    ax.plot(d["thresholds"], d["treat_none"], color="black", ls=":", label="treat none")
    ax.axvline(threshold, color="grey", lw=0.8, ls="-.", label=f"model threshold {threshold:.3f}")
    prevalence = float(np.mean(y))
    ax.set(xlim=(0, 1), ylim=(-0.05, max(prevalence, 0.05) * 1.15), xlabel="threshold probability",
           ylabel="net benefit", title="Decision curve")
    ax.legend(loc="upper right", fontsize=7)
    return fig


def _confusion_figure(op: Mapping[str, Any], label: str) -> Figure:
    fig, ax = _new_figure(4.2, 3.8)
    matrix = np.array([[op["tn"], op["fp"]], [op["fn"], op["tp"]]])
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(int(matrix.max()), 1))
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=14,
                color="white" if v > matrix.max() / 2 else "black")
    ax.set_xticks([0, 1], ["predicted negative", "predicted positive"])
    ax.set_yticks([0, 1], [f"{label} negative", f"{label} positive"])
    ax.set_title(f"Confusion matrix at threshold {op['threshold']:.3f}")
    return fig


def _png(fig: Figure, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# ---------------------------------------------------------------------------- files

def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return str(value)


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_value(row.get(c)) for c in columns])


def _f(value: Any, fmt: str = ".3f") -> str:
    return format(value, fmt) if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _auc_cell(g: Mapping[str, Any]) -> str:
    if g.get("auc") is None:
        return "n/a"
    return f"{g['auc']:.3f} ({g['auc_ci_low']:.3f}-{g['auc_ci_high']:.3f})"


def _operating_rows(figures: Mapping[str, Any]) -> str:
    rows = []
    for key, name in (("at_model_threshold", "model threshold"), ("at_youden", "Youden (this cohort)")):
        op = figures.get(key)
        if not op:
            rows.append(f"<tr><th>{_e(name)}</th>" + "<td>n/a</td>" * 10 + "</tr>")
            continue
        cells = [_f(op["threshold"], ".4f")] + [_f(op[k]) for k in ("sensitivity", "specificity", "accuracy",
                                                                    "ppv", "npv")]
        cells += [str(op[k]) for k in ("tp", "fp", "tn", "fn")]
        rows.append(f"<tr><th>{_e(name)}</th>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ("<table><tr><th></th><th>threshold</th><th>sensitivity</th><th>specificity</th><th>accuracy</th>"
            "<th>PPV</th><th>NPV</th><th>TP</th><th>FP</th><th>TN</th><th>FN</th></tr>" + "".join(rows) + "</table>")


def _group_table(groups: Mapping[str, Any], head: str) -> str:
    rows = [f"<table><tr><th>{_e(head)}</th><th>n</th><th>positives</th><th>AUC (95% CI)</th><th>sensitivity</th>"
            "<th>specificity</th><th>PPV</th><th>NPV</th><th>Brier</th></tr>"]
    for name, g in groups.items():
        op = g.get("at_model_threshold") or {}
        rows.append(f"<tr><th>{_e(name)}</th><td>{g['n']}</td><td>{g['positives']}</td><td>{_auc_cell(g)}</td>"
                    + "".join(f"<td>{_f(op.get(k))}</td>" for k in ("sensitivity", "specificity", "ppv", "npv"))
                    + f"<td>{_f(g.get('brier'))}</td></tr>")
    return "".join(rows) + "</table>"


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:70em;color:#222;
padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}.banner{background:#b00020;color:#fff;font-weight:bold;padding:.8em 1em;margin:1em 0;
font-size:1.1em}.figs{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0;max-width:100%}
figure img{width:100%}figcaption{font-size:.85em;color:#555}.note{color:#555;font-size:.9em}
"""

_SCRIPT = """
(function () {
  function count() {
    var n = 0, imgs = document.images;
    for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) { n++; } }
    document.body.dataset.figuresLoaded = String(n);
  }
  if (document.readyState === "complete") { count(); } else { window.addEventListener("load", count); }
})();
"""

_CAPTIONS = {
    "roc": "ROC curve with its 95% bootstrap band; AUC with the DeLong 95% CI.",
    "calibration": "Calibration: logistic calibration curve with its 95% bootstrap band, observed rates by "
                   "quantile of predicted risk, the distribution of predictions (grey).",
    "decision_curve": "Decision curve: net benefit of the model against treat-all and treat-none.",
    "confusion": "Confusion matrix at the model's threshold.",
}


def _html(model: Mapping[str, Any], label: str, threshold: float, metrics: Mapping[str, Any],
          pngs: Mapping[str, tuple[bytes, float]], failed: Sequence[Mapping[str, Any]], bootstrap: int, seed: int,
          synthetic: bool) -> str:
    ident = _identity(model)
    title = f"{ident.get('recipe', 'model')} {ident.get('version', '')}".strip()
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
             'style-src \'unsafe-inline\'; script-src \'unsafe-inline\'">',
             f"<title>Evaluation: {_e(title)}</title><style>{_STYLE}</style></head>",
             f'<body data-figures-expected="{len(pngs)}" data-figures-loaded="0">',
             f"<h1>Evaluation report: {_e(title)}</h1>"]
    if synthetic:
        parts.append('<div class="banner">NOT FOR CLINICAL USE. This model was trained on synthetic data'
                     + (f" ({_e(ident['training_data'])})" if ident.get("training_data") else "") + ".</div>")
    parts.append("<h2>Model</h2><table>")
    for key in MODEL_KEYS:
        if key in ident and key != "synthetic":
            value = ident[key]
            value = json.dumps(_json_ready(value), sort_keys=True) if isinstance(value, (Mapping, list)) else value
            parts.append(f"<tr><th>{_e(key.replace('_', ' '))}</th><td>{_e(value)}</td></tr>")
    parts.append(f"<tr><th>label</th><td>{_e(label)}</td></tr>"
                 f"<tr><th>model threshold</th><td>{threshold:.4f}</td></tr></table>")
    m = metrics
    parts.append("<h2>Whole cohort</h2><table>"
                 f"<tr><th>exams evaluated</th><td>{m['n']}</td></tr>"
                 f"<tr><th>positives ({_e(label)})</th><td>{m['positives']}</td></tr>"
                 f"<tr><th>not evaluated</th><td>{m['not_evaluated']}</td></tr>"
                 f"<tr><th>AUC (95% CI, DeLong)</th><td>{_auc_cell(m)}</td></tr>"
                 f"<tr><th>Brier score</th><td>{_f(m['brier'])}</td></tr>"
                 f"<tr><th>calibration intercept</th><td>{_f(m['calibration_intercept'])}</td></tr>"
                 f"<tr><th>calibration slope</th><td>{_f(m['calibration_slope'])}</td></tr>"
                 f"<tr><th>ECE ({ECE_BINS} bins)</th><td>{_f(m['ece'])}</td></tr></table>")
    parts.append("<h2>Operating points</h2>" + _operating_rows(m))
    parts.append('<h2>Figures</h2><div class="figs">')
    for name, (data, inches) in pngs.items():
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        parts.append(f'<figure id="fig-{name}" style="width:{round(inches * 96)}px"><img src="{uri}" '
                     f'alt="{_e(_CAPTIONS[name])}">'
                     f"<figcaption>{_e(_CAPTIONS[name])}</figcaption></figure>")
    parts.append(f'</div><p class="note">Bands: 2.5th-97.5th percentiles over {bootstrap} bootstrap resamples '
                 f"of the exams (seed {seed}).</p>")
    parts.append("<h2>By tumour size (largest diameter, mm)</h2>" + _group_table(m["by_tumour_size"], "size"))
    parts.append("<h2>By scanner manufacturer</h2>" + _group_table(m["by_manufacturer"], "manufacturer"))
    c = m.get("compare")
    if c:
        other = c["model"]
        name = f"{other.get('recipe', 'model B')} {other.get('version', '')}".strip()
        parts.append(f"<h2>Comparison with {_e(name)}</h2><table>"
                     f"<tr><th>paired exams</th><td>{c['n']} ({c['positives']} positive)</td></tr>"
                     f"<tr><th>AUC {_e(title)}</th><td>{_f(c['auc_a'])}</td></tr>"
                     f"<tr><th>AUC {_e(name)}</th><td>{_f(c['auc_b'])}</td></tr>"
                     f"<tr><th>difference (95% CI)</th><td>{_f(c['difference'])}"
                     + (f" ({c['ci'][0]:.3f} to {c['ci'][1]:.3f})" if c.get("ci") else "") + "</td></tr>"
                     f"<tr><th>z</th><td>{_f(c['z'])}</td></tr>"
                     f"<tr><th>p (paired DeLong, two-sided)</th><td>{_f(c['p_value'], '.4g')}</td></tr>"
                     + (f"<tr><th>no test</th><td>{_e(c['reason'])}</td></tr>" if c.get("reason") else "")
                     + "</table>")
        parts.append(f"<p>{_e(name)} on its own, at its threshold {c['b']['threshold']:.4f}:</p>"
                     + _group_table({name: c["b"]}, "model"))
    parts.append(f"<h2>Not evaluated ({len(failed)})</h2>")
    if failed:
        parts.append("<table><tr><th>exam</th><th>outcome</th><th>reasons</th></tr>")
        parts.extend(f"<tr><td>{_e(f['exam'])}</td><td>{_e(f['outcome'])}</td><td>{_e(f['reasons'])}</td></tr>"
                     for f in failed)
        parts.append("</table>")
    else:
        parts.append("<p>Every exam was evaluated.</p>")
    parts.append('<p class="note">Exams are named by their row number in the cohort or a hash; the report holds '
                 "no patient identifier.</p>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------- entry point

def evaluate_predictions(rows: Iterable[Mapping[str, Any]], *, label: str, threshold: float,
                         model: Mapping[str, Any], out_dir: Path | str,
                         failed: Iterable[Mapping[str, Any]] = (),
                         compare: Mapping[str, Any] | None = None, label_columns: Sequence[str] = (),
                         bootstrap: int = 1000, seed: int = 0, dpi: int = 200, pdf: bool = True) -> dict[str, Any]:
    """Write predictions.csv, metrics.json, figures/*.png, report.pdf and report.html
    into ``out_dir`` (created) from one model's predictions on a cohort; return the
    metrics (what metrics.json holds, NaN as ``None``). See the module's docstring for
    the row format and the files.

    ``threshold``: the model's decision threshold. ``model``: its identity (``recipe``,
    ``version``, ``variant``, ``sha256``, ``intended_use``, ``training_data``,
    ``calibration``, ``synthetic``; other keys are ignored). ``compare``: a second
    model on the same cohort, ``{"model": identity, "rows": rows, "threshold": t}``;
    the paired DeLong test runs on the exams both evaluated. ``bootstrap``: resamples
    for the ROC and calibration bands (0 draws no band), with ``seed``.

    Raises ``ValueError`` on a malformed row (an exam name that is not a row number or
    hash, a label that is not binary, a probability outside [0, 1], an exam listed
    twice) or when the evaluated exams lack a class (no AUC)."""
    _check_columns(label, label_columns)
    threshold = float(threshold)
    if bootstrap < 0:
        raise ValueError("bootstrap resamples cannot be negative")
    evaluated = _read_rows(rows, label, label_columns, threshold)
    not_evaluated = _exam_order(_read_failed(failed, label, label_columns))
    names = [r["exam"] for r in evaluated] + [r["exam"] for r in not_evaluated]
    if len(set(names)) != len(names):
        raise ValueError("an exam is listed more than once")
    if not evaluated:
        raise ValueError("no evaluated exam")
    evaluated = _exam_order(evaluated)
    y = np.array([r[label] for r in evaluated], bool)
    p = np.array([r["probability"] for r in evaluated], float)
    if y.all() or not y.any():
        raise ValueError(f"the evaluated exams have only one class of {label!r}: no AUC")

    metrics: dict[str, Any] = cohort_figures(y, p, threshold)
    sizes = [size_group(r["max_diameter_mm"]) for r in evaluated]
    metrics["by_tumour_size"] = _groups(sizes, y, p, threshold, order=SIZE_GROUPS)
    metrics["by_manufacturer"] = _groups([r["manufacturer"] or UNKNOWN for r in evaluated], y, p, threshold)
    metrics["not_evaluated"] = len(not_evaluated)

    b_curve = None
    if compare is not None:
        b_threshold = float(compare.get("threshold", threshold))
        a_labels = {r["exam"]: r[label] for r in evaluated}
        b_rows = _read_rows(_with_labels(compare.get("rows", ()), label, a_labels), label, (), b_threshold)
        b_by_exam = {r["exam"]: r for r in b_rows}
        if len(b_by_exam) != len(b_rows):
            raise ValueError("an exam is listed more than once for the compared model")
        metrics["compare"] = _compare(evaluated, b_rows, label, b_threshold, compare.get("model", {}))
        for r in evaluated:
            other = b_by_exam.get(r["exam"])
            r["probability_b"] = other["probability"] if other else None
            r["decision_b"] = other["decision"] if other else None
        if b_rows and 0 < sum(r[label] for r in b_rows) < len(b_rows):
            b_ident = _identity(compare.get("model", {}))
            b_name = f"{b_ident.get('recipe', 'model B')} {b_ident.get('version', '')}".strip()
            b_curve = (f"{b_name} (AUC {metrics['compare']['b']['auc']:.3f})",
                       np.array([r[label] for r in b_rows], bool), np.array([r["probability"] for r in b_rows]))
    metrics = _json_ready({k: metrics[k] for k in METRICS_KEYS if k in metrics})

    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    columns = ["exam", label, *label_columns, "probability", "decision", "roi_source", "outcome", "reasons",
               "max_diameter_mm", "manufacturer"] + (["probability_b", "decision_b"] if compare is not None else [])
    _write_csv(out / "predictions.csv", columns, evaluated + not_evaluated)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n", encoding="utf-8")

    boot = _bootstrap(y, p, bootstrap, seed)
    figs = {"roc": _roc_figure(y, p, threshold, metrics, boot, b_curve),
            "calibration": _calibration_figure(y, p, boot),
            "decision_curve": _decision_figure(y, p, threshold, b_curve),
            "confusion": _confusion_figure(metrics["at_model_threshold"], label)}
    pngs = {}
    for name in FIGURES:
        pngs[name] = _png(figs[name], dpi)
        (out / "figures" / f"{name}.png").write_bytes(pngs[name])
    if pdf:
        with PdfPages(out / "report.pdf", metadata={"Title": f"Evaluation of {_identity(model).get('recipe', '')}",
                                                    "Creator": "mvi-node"}) as doc:
            for name in FIGURES:
                doc.savefig(figs[name])
    synthetic = is_synthetic(model) if model else False
    page = _html(model, label, threshold, metrics, {k: (pngs[k], figs[k].get_figwidth()) for k in FIGURES},
                 not_evaluated, bootstrap, seed, synthetic)
    (out / "report.html").write_text(page, encoding="utf-8")
    return metrics
