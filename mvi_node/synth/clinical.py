"""Clinical factors the recipes use (age, sex, AFP, Child-Pugh, HBsAg, HCV, tumour count).

Distributions follow the cohorts of the seed papers: mostly HBV-related HCC in men
around 55; MVI+ patients have larger tumours and higher AFP (often > 400 ng/mL). The
separation is tuned so that MTD alone and AFP alone each reach an AUC of only ~0.72 /
~0.74 (seeded populations of 600), leaving room for the imaging signs to matter.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from mvi_node.synth.spec import ExamSpec, exam_rng


def draw_clinical(spec: ExamSpec) -> dict[str, Any]:
    """Clinical sidecar values plus the main tumour diameter (mm) and count."""
    rng = exam_rng(spec, "clinical")
    age = int(np.clip(rng.normal(56, 10), 28, 85))
    sex = "M" if rng.random() < 0.84 else "F"
    if spec.mvi:
        afp = float(np.exp(rng.normal(np.log(220 if spec.grade == "M2" else 110), 2.1)))
        count = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
        median = 56.0 if spec.grade == "M2" else 42.0
    else:
        afp = float(np.exp(rng.normal(np.log(18), 1.9)))
        count = int(rng.choice([1, 2, 3], p=[0.75, 0.2, 0.05]))
        median = 32.0
    diameter = float(np.clip(np.exp(rng.normal(np.log(median), 0.42)), 10, 80))
    child = str(rng.choice(["A", "B", "C"], p=[0.82, 0.15, 0.03]))
    return {
        "age": age,
        "sex": sex,
        "afp_ng_ml": round(float(np.clip(afp, 1.0, 60000.0)), 1),
        "child_pugh": child,
        "hbsag": bool(rng.random() < 0.78),
        "hcv": bool(rng.random() < 0.06),
        "tumor_count": count,
        "main_diameter_mm": round(diameter, 1),
    }


def patient_attributes(clinical: dict[str, Any], study_date: dt.datetime, birth_day: int) -> dict[str, Any]:
    """PatientAge/Sex/BirthDate (synthetic, consistent with the study date)."""
    anchor = study_date.date().replace(month=1 if study_date.month == 2 and study_date.day == 29 else study_date.month)
    birth = anchor.replace(year=anchor.year - clinical["age"]) - dt.timedelta(days=1 + birth_day % 360)
    return {
        "PatientBirthDate": birth.strftime("%Y%m%d"),
        "PatientSex": clinical["sex"],
        "PatientAge": f"{clinical['age']:03d}Y",
    }
