"""Logs, metrics and the admin API never carry patient names, IDs or birth dates."""

from __future__ import annotations

import json

import httpx
from pydicom import dcmread

from conftest import storescu
from mvi_node.synth import generate_ct

NAME_FAMILY, NAME_GIVEN = "QZXVORTMAN", "ELSPETHQ"
PATIENT_ID = "QZX-4711-ID"
BIRTH_DATE = "19470213"
ACCESSION = "QZXACC99"


def _mark_patient(folder):
    """Give every file of a synthetic exam distinctive patient identifiers."""
    for path in folder.rglob("*.dcm"):
        ds = dcmread(path)
        ds.PatientName = f"{NAME_FAMILY}^{NAME_GIVEN}"
        ds.PatientID = PATIENT_ID
        ds.PatientBirthDate = BIRTH_DATE
        ds.AccessionNumber = ACCESSION
        ds.save_as(path)


def test_no_patient_identifiers_anywhere(node, tmp_path, raw_sender):
    exam_dir = tmp_path / "exam"
    generate_ct(exam_dir, patients=1, seed=77, matrix=64)
    _mark_patient(exam_dir)
    n = node(env={"MVI_LOG_LEVEL": "DEBUG", "MVI_LOG_FORMAT": "json"})
    out = storescu(n.port, exam_dir, extra=["-R"])  # -R: contexts from the files, so SEG/SR go too
    assert "Received Store Response" in out.stdout + out.stderr or out.returncode == 0
    # a truncated file and a wrong calling AE put error paths into the log as well
    ct = next(p for p in sorted(exam_dir.rglob("*.dcm")) if dcmread(p, stop_before_pixels=True).Modality == "CT")
    trunc = tmp_path / "trunc.dcm"
    trunc.write_bytes(ct.read_bytes()[:-500])
    assert raw_sender(n.port, trunc).Status == 0xC000
    n.wait_jobs(1, timeout=120)

    admin = f"http://127.0.0.1:{n.admin_port}"
    surfaces = {
        "log": n.log_text(),
        "metrics": httpx.get(f"{admin}/metrics").text,
        "jobs": json.dumps([httpx.get(f"{admin}/jobs/{j['id']}").json() for j in httpx.get(f"{admin}/jobs").json()]),
        "status": json.dumps(n.status()),
    }
    assert "store refused" in surfaces["log"] and n.status()["instances"] > 10
    for where, text in surfaces.items():
        for secret in (NAME_FAMILY, NAME_GIVEN, PATIENT_ID, BIRTH_DATE):
            assert secret not in text, f"{secret} appears in the {where}"
    records = [json.loads(line) for line in surfaces["log"].splitlines()]  # JSON: one object per line
    stages = {r["stage"]: r for r in records if "stage" in r}
    assert stages["select"]["job_id"] == 1 and stages["select"]["seconds"] >= 0
    assert "receive_to_complete" in stages
    assert 'mvi_series_selected_total{role="ct_arterial"}' in surfaces["metrics"]
