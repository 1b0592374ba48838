"""Bad input gets a failure status or a rejection with a reason; the node keeps serving."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import SecondaryCaptureImageStorage

from conftest import echoscu, storescu
from mvi_node.synth.plain_series import plain_ct_series

SECRET_NAME = "SECRETNAME^TOPSECRET"
SECRET_ID = "PID-7731-SECRET"


def _one_ct(tmp_path: Path) -> Path:
    return plain_ct_series(tmp_path / "src", slices=1, matrix=64, seed=5, patient_name=SECRET_NAME, patient_id=SECRET_ID)[0]


def _rewrite(src: Path, dst: Path, mutate) -> Path:
    ds = dcmread(src)
    mutate(ds)
    ds.save_as(dst, enforce_file_format=False)
    return dst


def test_missing_sop_instance_uid(node, tmp_path, raw_sender):
    n = node()
    bad = _rewrite(_one_ct(tmp_path), tmp_path / "nouid.dcm", lambda ds: delattr(ds, "SOPInstanceUID"))
    status = raw_sender(n.port, bad)
    assert status.Status == 0xA900
    assert "SOPInstanceUID is missing" in status.ErrorComment
    assert echoscu(n.port).returncode == 0
    assert n.status()["instances"] == 0


def test_invalid_sop_instance_uid(node, tmp_path, raw_sender):
    n = node()

    def mutate(ds):
        ds.SOPInstanceUID = "1.2.03.abc/../x"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID

    bad = _rewrite(_one_ct(tmp_path), tmp_path / "baduid.dcm", mutate)
    status = raw_sender(n.port, bad)
    assert status.Status == 0xA900
    assert "not a valid UID" in status.ErrorComment
    assert not list((n.data_dir / "staging").rglob("*abc*"))
    assert echoscu(n.port).returncode == 0


def test_truncated_dataset(node, tmp_path, raw_sender):
    n = node()
    src = _one_ct(tmp_path)
    bad = tmp_path / "truncated.dcm"
    bad.write_bytes(src.read_bytes()[:-2000])
    status = raw_sender(n.port, bad)
    assert status.Status == 0xC000
    assert "truncated" in status.ErrorComment
    assert n.status()["instances"] == 0
    assert not list((n.data_dir / "staging").rglob("*.dcm"))
    assert not list((n.data_dir / "staging").rglob(".tmp-*"))
    assert echoscu(n.port).returncode == 0


def test_undecodable_dataset(node, tmp_path, raw_sender):
    n = node()
    src = _one_ct(tmp_path)
    raw = src.read_bytes()
    meta_end = 132 + 12 + dcmread(src, stop_before_pixels=True).file_meta.FileMetaInformationGroupLength
    bad = tmp_path / "garbage.dcm"
    # A valid file meta followed by an element whose explicit VR is nonsense.
    bad.write_bytes(raw[:meta_end] + b"\x08\x00\x16\x00ZZ\xff\xff" + b"\x01" * 64)
    status = raw_sender(n.port, bad)
    assert status.Status in (0xC000, 0xA900)
    assert n.status()["instances"] == 0
    assert echoscu(n.port).returncode == 0


def test_a_site_can_still_restrict_sop_classes(node, tmp_path):
    cfg = tmp_path / "node.toml"
    cfg.write_text('[listener]\nsop_classes = ["1.2.840.10008.5.1.4.1.1.2"]\n')  # CT only
    n = node(config=cfg)
    src = _one_ct(tmp_path)
    (tmp_path / "sc").mkdir()

    def to_sc(ds):
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage

    sc = _rewrite(src, tmp_path / "sc" / "sc.dcm", to_sc)
    result = storescu(n.port, sc, calling="SCSENDER")
    # storescu reports the refused class and exits 0 (it sent all it could)
    assert "No presentation context for: (SC)" in result.stdout + result.stderr
    assert echoscu(n.port).returncode == 0
    assert n.status()["instances"] == 0
    log = n.log_text()
    assert "'SCSENDER'" in log and "not accepted" in log


def test_logs_name_reason_and_caller_but_no_patient_data(node, tmp_path, raw_sender):
    n = node()
    src = _one_ct(tmp_path)
    bad = tmp_path / "truncated.dcm"
    bad.write_bytes(src.read_bytes()[:-2000])
    raw_sender(n.port, bad)
    assert storescu(n.port, src).returncode == 0
    n.wait_jobs(1)
    log = n.log_text()
    assert "store refused from 'BADSENDER'" in log and "truncated" in log
    for secret in (SECRET_NAME, "SECRETNAME", SECRET_ID, "19600101"):
        assert secret not in log
