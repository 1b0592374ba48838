"""Who may associate: called-AE check, calling-AE allow-list, TLS, disk back-pressure."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from conftest import echoscu, free_port
from mvi_node.config import load_settings
from mvi_node.app.node import Node
from mvi_node.synth.plain_series import plain_ct_series


def _write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_allow_list_rejects_unknown_calling_ae(node, tmp_path):
    cfg = _write_config(tmp_path / "node.toml", '[listener]\nallowed_callers = ["PACS", "ROUTER@127.0.0.1", "FAR@10.99.99.99"]\n')
    n = node(config=cfg)
    assert echoscu(n.port, calling="PACS").returncode == 0
    assert echoscu(n.port, calling="ROUTER").returncode == 0
    for caller in ("INTRUDER", "FAR"):  # FAR is allowed only from another host
        out = echoscu(n.port, calling=caller)
        assert out.returncode != 0
        assert "Calling AE Title Not Recognized" in out.stdout + out.stderr
    assert "calling AE 'INTRUDER' from 127.0.0.1 is not on the allow-list" in n.log_text()


def test_disk_floor_refuses_associations(node, tmp_path):
    cfg = _write_config(tmp_path / "node.toml", "[listener]\nmin_free_disk_mb = 1000000000\n")
    n = node(config=cfg)
    out = echoscu(n.port)
    assert out.returncode != 0
    assert "Reason: Temporary Congestion" in out.stdout + out.stderr
    assert "free disk below the floor" in n.log_text()


def test_disk_floor_crossed_mid_association_answers_a700(tmp_path):
    settings = load_settings(None, {"data_dir": str(tmp_path / "var"), "listener.port": free_port(), "admin.enabled": False})
    node = Node(settings)
    node.start()
    try:
        src = plain_ct_series(tmp_path / "s", slices=2, matrix=64, seed=3)
        ae = AE("SCU")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="MVI_NODE")
        assert assoc.is_established
        assert assoc.send_c_store(dcmread(src[0])).Status == 0x0000
        disk = node.listener.handlers.disk
        disk.min_free_bytes = disk.free_bytes() * 10  # the disk "fills up" now
        disk._checked_at = -1e9
        status = assoc.send_c_store(dcmread(src[1]))
        assoc.release()
        assert status.Status == 0xA700
        assert node.index.counts()["instances"] == 1
    finally:
        node.stop()


def _cert(subject: str, issuer_key, issuer_name, key, ca: bool = False):
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def pki(tmp_path):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("mvi-test-ca", ca_key, None, ca_key, ca=True)
    files = {"ca": tmp_path / "ca.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert("localhost" if who == "server" else "pacs", ca_key, ca.subject, key)
        files[f"{who}_cert"] = tmp_path / f"{who}.pem"
        files[f"{who}_key"] = tmp_path / f"{who}.key"
        files[f"{who}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{who}_key"].write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
    return files


def _tls_echo(port: int, pki: dict, with_client_cert: bool) -> bool:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki["ca"]))
    if with_client_cert:
        ctx.load_cert_chain(str(pki["client_cert"]), str(pki["client_key"]))
    ae = AE("TLSSCU")
    ae.add_requested_context(Verification)
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="MVI_NODE", tls_args=(ctx, "localhost"))
    except (ssl.SSLError, OSError):
        return False
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return status.Status == 0x0000


def test_tls_association(node, tmp_path, pki):
    cfg = _write_config(
        tmp_path / "tls.toml",
        f'[listener.tls]\nenabled = true\ncertificate = "{pki["server_cert"]}"\nprivate_key = "{pki["server_key"]}"\n'
        f'client_ca = "{pki["ca"]}"\n',
    )
    n = node(config=cfg)
    assert _tls_echo(n.port, pki, with_client_cert=True)
    assert not _tls_echo(n.port, pki, with_client_cert=False)  # client certificate required
    assert echoscu(n.port).returncode != 0  # plain DICOM is not served on a TLS port
