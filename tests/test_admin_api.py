"""The admin API on a live node: endpoints, auth, and every operation against its OpenAPI spec."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port, storescu
from mvi_node.config import load_settings
from mvi_node.app.node import Node
from mvi_node.synth.plain_series import plain_ct_series


@pytest.fixture(scope="module")
def live_node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("admin")
    s = load_settings(
        None,
        {
            "data_dir": str(tmp / "var"),
            "listener.port": free_port(),
            "admin.port": free_port(),
            "completion.quiet_seconds": 0.5,
            "completion.poll_seconds": 0.1,
        },
    )
    node = Node(s)
    node.start()
    series = plain_ct_series(tmp / "s", slices=3, matrix=64, seed=21)
    assert storescu(node.port, series[0].parent).returncode == 0
    deadline = time.monotonic() + 20
    while node.jobs.counts()["done"] < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    yield node
    node.stop()


@pytest.fixture(scope="module")
def client(live_node):
    with httpx.Client(base_url=f"http://127.0.0.1:{live_node.admin.port}", timeout=10) as c:
        yield c


def test_health_ready_and_metrics(client):
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["storage"]["ok"]
    text = client.get("/metrics").text
    assert "mvi_instances_received_total 3.0" in text
    assert 'mvi_jobs{state="done"} 1.0' in text
    assert "mvi_stage_duration_seconds_bucket" in text


def test_readyz_fails_when_a_check_fails(live_node, client):
    live_node.readiness["destination:PACS"] = lambda: (False, "C-ECHO refused")
    try:
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["destination:PACS"]["detail"] == "C-ECHO refused"
    finally:
        del live_node.readiness["destination:PACS"]


def test_jobs_listing_detail_and_retry(live_node, client):
    jobs = client.get("/jobs", params={"state": "done"}).json()
    assert len(jobs) == 1 and jobs[0]["kind"] == "study"
    detail = client.get(f"/jobs/{jobs[0]['id']}").json()
    assert detail["result"]["instances"] == 3
    assert client.get("/jobs/999999").status_code == 404
    retried = client.post(f"/jobs/{jobs[0]['id']}/retry")
    assert retried.status_code == 200 and retried.json()["state"] == "queued"
    deadline = time.monotonic() + 10
    while client.get(f"/jobs/{jobs[0]['id']}").json()["state"] != "done" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.get(f"/jobs/{jobs[0]['id']}").json()["state"] == "done"


def test_clinical_factors(live_node, client):
    r = client.post("/clinical-factors", json={"accession_number": "ACC9", "afp_ng_ml": 812.5, "child_pugh": "B"})
    assert r.status_code == 201
    assert live_node.clinical.get("ACC9") == {"accession_number": "ACC9", "afp_ng_ml": 812.5, "child_pugh": "B"}
    assert client.post("/clinical-factors", json={"afp_ng_ml": 3}).status_code == 422
    assert client.post("/clinical-factors", json={"patient_id": "X", "child_pugh": "D"}).status_code == 422


def test_token_required_when_configured(tmp_path):
    s = load_settings(
        None,
        {"data_dir": str(tmp_path / "var"), "listener.port": free_port(), "admin.port": free_port(), "admin.token": "t0ken-0123456789abcdef"},
    )
    node = Node(s)
    node.start()
    try:
        base = f"http://127.0.0.1:{node.admin.port}"
        assert httpx.get(f"{base}/healthz").status_code == 200  # liveness stays open
        assert httpx.get(f"{base}/jobs").status_code == 401
        assert httpx.get(f"{base}/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{base}/jobs", headers={"Authorization": "Bearer t0ken-0123456789abcdef"}).status_code == 200
    finally:
        node.stop()


def test_every_operation_conforms_to_the_openapi_spec(live_node):
    """schemathesis generates requests for every operation from /openapi.json and checks
    the responses (status codes, schemas, content types, no 5xx) against the spec."""
    import shutil
    import subprocess
    import sys

    st = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    out = subprocess.run(
        [st, "run", f"http://127.0.0.1:{live_node.admin.port}/openapi.json", "--checks", "all",
         "--max-examples", "25", "--seed", "1", "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-4000:]
    assert "Tested: 11" in out.stdout  # 7 + the 4 replay operations
    # no issue; the one warning allowed: ids of replays (cancel) that fuzzed requests rarely hit
    warned = "Missing test data" in out.stdout and "POST /replays/{replay_id}/cancel" in out.stdout
    assert "No issues found" in out.stdout or (warned and "FAILURES" not in out.stdout), out.stdout[-4000:]


def test_jobs_are_listed_for_people_iso_times_filters_and_outcomes(live_node, client, capsys):
    import re

    from mvi_node.commands.main import main

    jobs = client.get("/jobs").json()
    assert jobs and all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", j["created_at"]) for j in jobs)
    study = next(j for j in jobs if j["kind"] == "study")
    assert study["study_uid"] and isinstance(study["results"], list)
    only = client.get("/jobs", params={"study": study["study_uid"]}).json()
    assert only and {j["study_uid"] for j in only} == {study["study_uid"]}
    assert client.get("/jobs", params={"study": "1.2.3.4.5.6.7.8.9"}).json() == []
    assert {j["kind"] for j in client.get("/jobs", params={"kind": "study"}).json()} == {"study"}
    detail = client.get(f"/jobs/{study['id']}").json()
    assert detail["not_before"].endswith("Z")
    # the CLI prints the same view as a table
    assert main(["jobs", "--data-dir", str(live_node.settings.data_dir), "--study", study["study_uid"]]) == 0
    out = capsys.readouterr().out
    assert "study" in out and study["study_uid"] in out and "updated (UTC)" in out
