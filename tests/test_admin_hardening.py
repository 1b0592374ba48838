"""The admin API's front door (issue #15 items 3, 12, 13): token strength, no identifiers
echoed, HTTPS, and the OpenAPI document behind the token."""

from __future__ import annotations

import ssl
import subprocess
import sys

import httpx
import pytest

from conftest import free_port
from mvi_node.app.node import Node
from mvi_node.config import load_settings
from test_ingest_access import pki  # noqa: F401  (the access tests' PKI fixture)

TOKEN = "adm1n-t0ken-0123456789abcdef"
SECRET_PID = "PID-7731-SECRET"


@pytest.mark.parametrize("token, why", [("", "is empty"), ("   ", "is empty"), ("x", "shorter than 16"),
                                         ("fifteen-chars-x", "shorter than 16")])
def test_serve_refuses_an_empty_or_short_token_naming_the_key(tmp_path, token, why):
    env = {"MVI_ADMIN__TOKEN": token, "MVI_ADMIN__HOST": "0.0.0.0", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "mvi_node", "serve", "--data-dir", str(tmp_path / "var"), "--port", str(free_port()),
         "--admin-port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2
    assert "admin.token" in out.stderr and why in out.stderr
    assert not (tmp_path / "var").exists()  # refused before anything started


@pytest.fixture
def guarded_node(tmp_path):
    s = load_settings(None, {"data_dir": str(tmp_path / "var"), "listener.port": free_port(),
                             "admin.port": free_port(), "admin.token": TOKEN})
    node = Node(s)
    node.start()
    yield node, f"http://127.0.0.1:{node.admin.port}"
    node.stop()


def test_docs_and_the_spec_are_behind_the_token(guarded_node):
    _, base = guarded_node
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert httpx.get(base + path).status_code in (401, 404), path
    assert httpx.get(base + "/openapi.json", headers=auth).json()["info"]["title"] == "mvi-node admin API"
    assert "swagger" in httpx.get(base + "/docs", headers=auth).text.lower()
    assert httpx.get(base + "/healthz").status_code == 200  # liveness stays open
    for path in ("/jobs", "/metrics", "/readyz"):
        assert httpx.get(base + path).status_code == 401, path
    assert httpx.post(base + "/clinical-factors", json={"patient_id": "P1"}).status_code == 401


def test_clinical_factors_never_echo_an_identifier(guarded_node):
    node, base = guarded_node
    auth = {"Authorization": f"Bearer {TOKEN}"}
    ok = httpx.post(base + "/clinical-factors", json={"patient_id": SECRET_PID, "afp_ng_ml": 12.5}, headers=auth)
    assert ok.status_code == 201 and ok.json() == {"filed_under": "patient_id", "stored": True}
    assert SECRET_PID not in ok.text
    assert node.clinical.get(SECRET_PID) == {"patient_id": SECRET_PID, "afp_ng_ml": 12.5}
    for body in (
        {"patient_id": SECRET_PID, "child_pugh": "D"},  # a bad value next to the identifier
        {"patient_id": SECRET_PID * 5},  # the identifier itself invalid (too long)
        {"accession_number": SECRET_PID, "tumour_count": SECRET_PID},
    ):
        bad = httpx.post(base + "/clinical-factors", json=body, headers=auth)
        assert bad.status_code == 422
        assert SECRET_PID not in bad.text, bad.text
        assert all(set(d) == {"loc", "msg", "type"} for d in bad.json()["detail"])
    not_json = httpx.post(base + "/clinical-factors", content=f'{{"patient_id": "{SECRET_PID}"', headers=auth)
    assert not_json.status_code in (400, 422) and SECRET_PID not in not_json.text


def test_admin_api_over_https(tmp_path, pki):
    s = load_settings(None, {
        "data_dir": str(tmp_path / "var"), "listener.port": free_port(), "admin.port": free_port(),
        "admin.token": TOKEN, "admin.tls.enabled": True, "admin.tls.certificate": str(pki["server_cert"]),
        "admin.tls.private_key": str(pki["server_key"]),
    })
    node = Node(s)
    node.start()
    try:
        port = node.admin.port
        ctx = ssl.create_default_context(cafile=str(pki["ca"]))
        r = httpx.get(f"https://localhost:{port}/jobs", headers={"Authorization": f"Bearer {TOKEN}"}, verify=ctx)
        assert r.status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)  # no plain HTTP on that port
    finally:
        node.stop()
