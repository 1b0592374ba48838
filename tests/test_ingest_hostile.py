"""Hostile and odd input at the front door (issue #15, items 1-2, 4-11, 14).

Each test sends its input over a real loopback association (or, for the data folder and
start-up items, sets up the folder a real node then starts on) and checks the status
that comes back, what is on disk, the node's memory where that is the point, and that
the node still answers C-ECHO.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from conftest import NodeProcess, echoscu, free_port, storescu
from hostile import NO_DATASET, RawStoreSCU, dataset_bytes
from test_ingest_access import _tls_echo, pki  # noqa: F401  (pki: the access tests' PKI fixture)
from mvi_node.common.filepool import not_spare
from mvi_node.synth.plain_series import plain_ct_series

CT = "1.2.840.10008.5.1.4.1.1.2"
SC = "1.2.840.10008.5.1.4.1.1.7"
MiB = 1 << 20


# -- helpers -------------------------------------------------------------------------

def _config(tmp_path: Path, text: str, name: str = "node.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _one_ct(tmp_path: Path, name: str = "src", **kw) -> Path:
    return plain_ct_series(tmp_path / name, slices=1, matrix=64, seed=kw.pop("seed", 5), **kw)[0]


#: for the tests that measure the node's memory: the model warm-up loads its ONNX
#: sessions in the background, at the very time the test measures
NO_WARM_UP = {"MVI_INFERENCE__WARM_UP": "false"}


def _peak_rss(n: NodeProcess) -> int:
    """The node process's peak resident memory so far (VmHWM), bytes."""
    for line in Path(f"/proc/{n.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _nothing_kept(n: NodeProcess) -> None:
    """Nothing staged, no temporary file left, nothing in the receive spool."""
    assert _files(n.data_dir / "staging") == []
    assert not_spare(n.data_dir / "incoming") == []
    assert n.status()["instances"] == 0


def _elem(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr == b"UI" else b" "
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return struct.pack("<HH", group, element) + vr + b"\x00\x00" + struct.pack("<I", len(value)) + value
    return struct.pack("<HH", group, element) + vr + struct.pack("<H", len(value)) + value


def _header_and_pixels(path: Path) -> tuple[bytes, bytes]:
    """A CT's dataset (explicit VR LE) split before its PixelData element."""
    data, *_ = dataset_bytes(path)
    at = data.rindex(b"\xe0\x7f\x10\x00OW")
    return data[:at], data[at:]


def _with_uid(data: bytes, old: str, new: bytes) -> bytes:
    """Replace the UI element whose value is ``old`` with one holding ``new``."""
    raw = old.encode() + (b"\x00" if len(old) % 2 else b"")
    at = data.index(raw) - 8
    group, element = struct.unpack_from("<HH", data, at)
    return data[:at] + _elem(group, element, b"UI", new) + data[at + 8 + len(raw):]


def _scu(n: NodeProcess, *extra, **kw) -> RawStoreSCU:
    return RawStoreSCU(n.port, [(CT, ExplicitVRLittleEndian), *extra], **kw)


# -- 1. deflate bombs ---------------------------------------------------------------

def _deflate_bomb(ct: Path, zeros: int) -> bytes:
    """A deflated CT whose pixel data is ``zeros`` bytes of nothing: ~1000:1."""
    header, _ = _header_and_pixels(ct)
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [z.compress(header), z.compress(struct.pack("<HH", 0x7FE0, 0x0010) + b"OW\x00\x00" + struct.pack("<I", zeros))]
    block = bytes(MiB)
    for _ in range(zeros // MiB):
        out.append(z.compress(block))
    out.append(z.flush())
    return b"".join(out)


def test_deflate_bomb_is_refused_unstaged_and_memory_stays_flat(node, tmp_path):
    n = node(config=_config(tmp_path, "[listener]\nmax_inflated_mb = 16\n"), env=NO_WARM_UP)
    ct = _one_ct(tmp_path)
    bomb = _deflate_bomb(ct, 256 * MiB)
    assert len(bomb) < 512 * 1024  # a few hundred KiB on the wire
    _, _, sop, _ = dataset_bytes(ct)
    before = _peak_rss(n)
    with _scu(n, (CT, DeflatedExplicitVRLittleEndian)) as scu:
        rsp = scu.store(bomb, CT, sop, transfer_syntax=DeflatedExplicitVRLittleEndian)
        assert rsp.status == 0xC002 and "max_inflated_mb" in rsp.comment
        assert scu.echo() == 0x0000
    assert _peak_rss(n) - before < 48 * MiB
    _nothing_kept(n)
    assert echoscu(n.port).returncode == 0


def test_deflated_dataset_within_the_limit_is_stored_as_sent(node, tmp_path):
    n = node()
    ct = _one_ct(tmp_path)
    data, _, sop, _ = dataset_bytes(ct)
    z = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = z.compress(data) + z.flush()
    trailer = struct.pack("<II", zlib.crc32(data), len(data))  # some writers append a gzip trailer
    with _scu(n, (CT, DeflatedExplicitVRLittleEndian)) as scu:
        assert scu.store(deflated + trailer, CT, sop, transfer_syntax=DeflatedExplicitVRLittleEndian).status == 0
        truncated = scu.store(deflated[:-7], CT, sop, transfer_syntax=DeflatedExplicitVRLittleEndian)
        junk = scu.store(deflated + trailer + b"\x00", CT, sop, transfer_syntax=DeflatedExplicitVRLittleEndian)
    assert truncated.status == 0xC000  # (already staged, but a torn stream is refused before that)
    assert junk.status == 0xC000 and "after the end of the deflate" in junk.comment
    (staged,) = _files(n.data_dir / "staging")
    assert staged.read_bytes().endswith(deflated + trailer)
    assert dcmread(staged).SOPInstanceUID == sop


# -- 2. TLS: a silent peer --------------------------------------------------------------

def test_silent_tls_peer_blocks_no_one_and_shutdown_stays_prompt(node, tmp_path, pki):
    tls_files = pki

    cfg = _config(
        tmp_path,
        f'[listener.tls]\nenabled = true\ncertificate = "{tls_files["server_cert"]}"\n'
        f'private_key = "{tls_files["server_key"]}"\nclient_ca = "{tls_files["ca"]}"\nhandshake_timeout_s = 2.0\n',
    )
    n = node(config=cfg)
    silent = socket.create_connection(("127.0.0.1", n.port))  # connects, then says nothing
    try:
        result: list[bool] = []
        t = threading.Thread(target=lambda: result.append(_tls_echo(n.port, tls_files, with_client_cert=True)))
        started = time.monotonic()
        t.start()
        t.join(timeout=15)
        assert result == [True], "a silent TCP peer blocked the next TLS association"
        assert time.monotonic() - started < 10
        silent.settimeout(10)
        try:
            assert silent.recv(1) == b""  # the node dropped the handshake that never came
        except ConnectionResetError:
            pass
    finally:
        silent.close()
    assert "TLS handshake from 127.0.0.1 failed" in n.log_text()
    again = socket.create_connection(("127.0.0.1", n.port))  # silent while the node stops
    try:
        started = time.monotonic()
        assert n.stop() == 0
        assert time.monotonic() - started < 15
    finally:
        again.close()


def test_bare_tcp_connections_give_their_association_slots_back(node, tmp_path):
    """A load balancer's TCP check connects and says nothing. Each such connection holds a
    thread until ARTIM ([listener] request_timeout_s) closes it, not pynetdicom's 30 s
    ACSE timeout (and no association place: see the next test)."""
    n = node(config=_config(tmp_path, "[listener]\nmax_associations = 2\nrequest_timeout_s = 1.0\n"))
    probes = [socket.create_connection(("127.0.0.1", n.port)) for _ in range(2)]
    try:
        started = time.monotonic()
        for probe in probes:
            probe.settimeout(10)
            try:
                assert probe.recv(1) == b""  # closed by the node, not by the probe
            except ConnectionResetError:
                pass
        assert time.monotonic() - started < 5
        assert echoscu(n.port).returncode == 0
        assert storescu(n.port, _one_ct(tmp_path)).returncode == 0
    finally:
        for probe in probes:
            probe.close()


def test_bare_tcp_connections_take_no_association_slot(node, tmp_path):
    """The limit counts peers that asked for an association: with both of two places
    "taken" by silent TCP connections (a load balancer's checks), a sender still gets in
    at once, long before ARTIM would close them; a third real association is refused
    "local limit exceeded" and counted."""
    n = node(config=_config(tmp_path, "[listener]\nmax_associations = 2\nrequest_timeout_s = 20.0\n"))
    probes = [socket.create_connection(("127.0.0.1", n.port)) for _ in range(2)]
    try:
        time.sleep(0.3)  # the node has accepted them
        started = time.monotonic()
        assert echoscu(n.port).returncode == 0
        assert storescu(n.port, _one_ct(tmp_path)).returncode == 0
        assert time.monotonic() - started < 10  # the probes are still open (20 s ARTIM)
        with _scu(n) as first, _scu(n) as second:
            assert first.alive and second.alive
            third = echoscu(n.port)
            assert third.returncode != 0 and "Local Limit Exceeded" in third.stdout + third.stderr
        assert echoscu(n.port).returncode == 0  # the places came back with the releases
        metrics = httpx.get(f"http://127.0.0.1:{n.admin_port}/metrics", timeout=10).text
        assert 'mvi_associations_rejected_total{reason="limit"} 1.0' in metrics
    finally:
        for probe in probes:
            probe.close()


# -- 4. SOP class against its presentation context ------------------------------------

def test_sop_class_must_match_its_presentation_context(node, tmp_path):
    n = node()
    data, _, sop, _ = dataset_bytes(_one_ct(tmp_path))
    sc_data = data.replace(CT.encode() + b"\x00", SC.encode() + b"\x00", 1)
    with _scu(n) as scu:  # only a CT context is proposed
        rsp = scu.store(sc_data, SC, sop, context=CT)
        assert rsp.status == 0x0122 and "presentation context" in rsp.comment
        assert scu.echo() == 0x0000
    _nothing_kept(n)
    assert echoscu(n.port).returncode == 0


# -- 5. short truncations --------------------------------------------------------------

def _short_final_value(ct: Path) -> tuple[bytes, str, int]:
    """A CT dataset without pixel data whose last element has a value of a few bytes;
    also the length of that element's value."""
    header, _ = _header_and_pixels(ct)
    tail = _elem(0x0040, 0xA07A, b"UI", b"1.2.3")  # any small element after the others
    _, _, sop, _ = dataset_bytes(ct)
    return header + tail, sop, 6


@pytest.mark.parametrize("cut", ["in the final small value", "in the last element's header", "one byte of pixel data"])
def test_short_truncations_are_refused(node, tmp_path, cut):
    n = node()
    ct = _one_ct(tmp_path)
    data, sop, value_len = _short_final_value(ct)
    if cut == "in the final small value":
        sent = data[:-2]
    elif cut == "in the last element's header":
        sent = data[: -value_len - 3]  # inside tag/VR/length of the last element
    else:
        full, *_ = dataset_bytes(ct)
        sent = full[:-1]
    with _scu(n) as scu:
        rsp = scu.store(sent, CT, sop)
        assert rsp.status == 0xC000 and "truncated" in rsp.comment
        assert scu.echo() == 0x0000
    _nothing_kept(n)
    assert echoscu(n.port).returncode == 0


# -- 6. UIDs checked on the whole string ------------------------------------------------

def test_uid_with_a_trailing_newline_is_refused(node, tmp_path):
    n = node()
    ct = _one_ct(tmp_path)
    data, _, sop, _ = dataset_bytes(ct)
    study = str(dcmread(ct).StudyInstanceUID)
    bad = _with_uid(data, study, study[:60].encode() + b"\n")
    with _scu(n) as scu:
        rsp = scu.store(bad, CT, sop)
        assert rsp.status == 0xA900 and "StudyInstanceUID is not a valid UID" in rsp.comment
        assert scu.echo() == 0x0000
    _nothing_kept(n)
    assert not any("\n" in p.name for p in (n.data_dir / "staging").rglob("*"))
    assert echoscu(n.port).returncode == 0


def test_a_sop_instance_uid_not_encoded_as_ui_is_refused(node, tmp_path):
    # found by bench/fuzz_ingest.py: read as SS, pydicom sees another "UID" than the check did
    n = node()
    data, _, sop, _ = dataset_bytes(_one_ct(tmp_path))
    at = data.index(struct.pack("<HH", 0x0008, 0x0018) + b"UI")
    bad = data[:at + 4] + b"SS" + data[at + 6:]
    with _scu(n) as scu:
        rsp = scu.store(bad, CT, sop)
        assert rsp.status == 0xC000 and "VR is not UI" in rsp.comment
    _nothing_kept(n)


def test_uids_encoded_as_un_are_read_as_readers_read_them(node, tmp_path):
    # some writers encode every element as UN (pydicom's rtdose_rle test file does):
    # readers decode them with the dictionary's VR, and so does the check
    n = node()
    ct = dcmread(_one_ct(tmp_path))
    data, _, sop, _ = dataset_bytes(_one_ct(tmp_path))
    for uid in (ct.StudyInstanceUID, ct.SeriesInstanceUID, sop):
        raw = uid.encode() + (b"\x00" if len(uid) % 2 else b"")
        at = data.index(raw) - 8
        group, element = struct.unpack_from("<HH", data, at)
        data = data[:at] + _elem(group, element, b"UN", raw) + data[at + 8 + len(raw):]
    with _scu(n) as scu:
        assert scu.store(data, CT, sop).status == 0x0000
    (staged,) = _files(n.data_dir / "staging")
    assert staged.relative_to(n.data_dir / "staging").parts == (ct.StudyInstanceUID, ct.SeriesInstanceUID,
                                                                  f"{sop}.dcm")
    assert dcmread(staged).SOPInstanceUID == sop


def test_uids_in_nested_sequences_do_not_decide_where_an_instance_goes(node, tmp_path):
    # a key object selection's evidence names other studies and series after its own
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from routed_objects import _save

    n = node()
    ct = dcmread(_one_ct(tmp_path))
    kos = Dataset()
    kos.StudyInstanceUID = ct.StudyInstanceUID
    kos.Modality = "KO"
    ref_series = Dataset()
    ref_series.SeriesInstanceUID = "1.2.3.4.5.6.7"
    evidence = Dataset()
    evidence.StudyInstanceUID = "1.2.3.4.5.6"
    evidence.ReferencedSeriesSequence = Sequence([ref_series])
    kos.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])
    path = _save(kos, "1.2.840.10008.5.1.4.1.1.88.59", tmp_path / "kos" / "kos.dcm")
    kos = dcmread(path)
    assert storescu(n.port, path).returncode == 0
    (staged,) = _files(n.data_dir / "staging")
    assert staged.relative_to(n.data_dir / "staging").parts == (
        kos.StudyInstanceUID, kos.SeriesInstanceUID, f"{kos.SOPInstanceUID}.dcm")


# -- 7. log forging ---------------------------------------------------------------------

def test_a_newline_in_a_command_uid_cannot_forge_a_log_line(node, tmp_path):
    n = node()
    data, _, sop, _ = dataset_bytes(_one_ct(tmp_path))
    forged = "1.2.3\n2031-01-01 00:00:00,000 INFO mvi_node: FORGED"
    assert len(forged) <= 64  # pynetdicom lets a short non-conformant UID through to the handler
    with _scu(n) as scu:
        rsp = scu.store(data, CT, forged)
        assert rsp.status == 0xA900
        assert scu.echo() == 0x0000
    log = n.log_text()
    assert "1.2.3\\n2031-01-01" in log  # escaped, on the line that reports the refusal
    assert not any(line.startswith("2031-01-01") for line in log.splitlines())
    _nothing_kept(n)


@pytest.mark.parametrize("which", ["AffectedSOPInstanceUID", "AffectedSOPClassUID"])
def test_a_command_uid_longer_than_64_characters_gets_a_status_not_an_abort(node, tmp_path, which):
    # pynetdicom refuses to decode such a command and aborts the association, unless the
    # listener's own associations decode it and leave the judgement to the node
    n = node()
    data, _, sop, _ = dataset_bytes(_one_ct(tmp_path))
    long_uid = "1.2.826.0.1.3680043.8.498." + "1234567890." * 6 + "1"
    assert len(long_uid) > 64
    sop_class, sop_instance = (CT, long_uid) if which == "AffectedSOPInstanceUID" else (long_uid, sop)
    with _scu(n) as scu:
        rsp = scu.store(data, sop_class, sop_instance, context=CT)
        assert rsp.status == 0xA900 and f"{which} is not a valid UID" in rsp.comment, rsp
        assert scu.alive and scu.echo() == 0x0000
        _nothing_kept(n)
        assert scu.store(data, CT, sop).status == 0x0000  # the same association goes on storing
    assert "aborted" not in n.log_text().lower()
    assert echoscu(n.port).returncode == 0


def test_a_command_naming_a_sop_class_no_one_knows_gets_a_status_not_an_abort(node, tmp_path):
    # pynetdicom finds no service for the class and aborts; the node answers on the context
    n = node()
    data, _, sop, _ = dataset_bytes(_one_ct(tmp_path))
    with _scu(n) as scu:
        rsp = scu.store(data, "1.2.3.4.5", sop, context=CT)
        assert rsp.status == 0x0122 and "presentation context" in rsp.comment, rsp
        assert scu.alive and scu.echo() == 0x0000
        _nothing_kept(n)
    assert echoscu(n.port).returncode == 0


# -- 8. one node per data folder --------------------------------------------------------

def test_a_second_node_on_the_same_data_folder_stops_before_touching_it(node, tmp_path):
    from mvi_node.jobs import open_job_store
    from mvi_node.jobs.store import JobState

    a = node()
    in_flight = a.data_dir / "staging" / ".tmp-in-flight"
    in_flight.parent.mkdir(parents=True, exist_ok=True)
    in_flight.write_bytes(b"half an instance")
    (a.data_dir / "incoming").mkdir(exist_ok=True)
    receiving = a.data_dir / "incoming" / ".tmp-in-receiving"
    receiving.write_bytes(b"half a dataset")
    jobs = open_job_store("sqlite", a.data_dir / "jobs.sqlite3")
    jobs.enqueue("probe", "probe:1", {})
    running = jobs.claim(["probe"], worker="a")
    assert running is not None
    second = subprocess.run(
        [sys.executable, "-m", "mvi_node", "serve", "--data-dir", str(a.data_dir), "--port", str(free_port()),
         "--admin-port", str(free_port())],
        capture_output=True, text=True, timeout=120,
    )
    assert second.returncode == 3
    assert f"is in use by another mvi-node process (pid {a.proc.pid})" in second.stderr
    assert in_flight.exists() and receiving.exists()
    assert jobs.get(running.id).state == JobState.RUNNING
    assert echoscu(a.port).returncode == 0


# -- 9. an unreadable staged file at start-up -------------------------------------------

def test_unreadable_staged_file_is_quarantined_and_start_up_goes_on(node, tmp_path):
    data_dir = tmp_path / "var0"
    bad = data_dir / "staging" / "1.2.3" / "1.2.3.4" / "1.2.3.4.5.dcm"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x00" * 128 + b"DICM" + b"not a file meta at all")
    good_src = _one_ct(tmp_path)
    ds = dcmread(good_src)
    good = data_dir / "staging" / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    good.parent.mkdir(parents=True)
    good.write_bytes(good_src.read_bytes())
    n = node()
    assert n.data_dir == data_dir
    assert echoscu(n.port).returncode == 0
    assert not bad.exists()
    assert (data_dir / "quarantine" / "1.2.3" / "1.2.3.4" / "1.2.3.4.5.dcm").read_bytes().endswith(b"at all")
    assert "staged file 1.2.3/1.2.3.4/1.2.3.4.5.dcm is unreadable" in n.log_text()
    assert n.status()["instances"] == 1  # the readable one was re-indexed
    metrics = httpx.get(f"http://127.0.0.1:{n.admin_port}/metrics", timeout=10).text
    assert "mvi_staged_files_quarantined_total 1.0" in metrics


# -- 10. batched durability really fsyncs -------------------------------------------------

def test_batched_durability_fsyncs_each_file_and_folder_within_the_interval(tmp_path, monkeypatch):
    from mvi_node.app.node import Node
    from mvi_node.config import load_settings

    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    settings = load_settings(None, {
        "data_dir": str(tmp_path / "var"), "listener.port": free_port(), "admin.enabled": False,
        "staging.durability": "batched", "staging.batch_interval_s": 0.2,
    })
    node = Node(settings)
    node.start()
    try:
        series = plain_ct_series(tmp_path / "s", slices=3, matrix=64, seed=8)
        synced.clear()
        sent = time.monotonic()
        assert storescu(node.port, series[0].parent).returncode == 0
        staged = sorted((tmp_path / "var" / "staging").rglob("*.dcm"))
        assert len(staged) == 3
        deadline = sent + 5
        want = {str(p) for p in staged} | {str(staged[0].parent), str(staged[0].parent.parent)}
        while not want <= set(synced) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert want <= set(synced), sorted(want - set(synced))
        assert echoscu(node.port).returncode == 0
    finally:
        node.stop()


# -- 11. memory does not grow with instance size; a maximum size --------------------------

def _big_instance(ct: Path, pixel_bytes: int) -> tuple[bytes, str]:
    header, _ = _header_and_pixels(ct)
    _, _, sop, _ = dataset_bytes(ct)
    return header + struct.pack("<HH", 0x7FE0, 0x0010) + b"OW\x00\x00" + struct.pack("<I", pixel_bytes) + bytes(pixel_bytes), sop


def test_a_large_instance_goes_to_disk_not_memory(node, tmp_path):
    n = node(env=NO_WARM_UP)
    data, sop = _big_instance(_one_ct(tmp_path), 160 * MiB)
    before = _peak_rss(n)
    with _scu(n, max_pdu=131072, timeout=120) as scu:
        assert scu.store(data, CT, sop).status == 0x0000
        assert scu.echo() == 0x0000
    assert _peak_rss(n) - before < 48 * MiB  # received to a file, copied by the kernel
    (staged,) = _files(n.data_dir / "staging")
    assert staged.stat().st_size > 160 * MiB and dcmread(staged, stop_before_pixels=True).SOPInstanceUID == sop
    assert not_spare(n.data_dir / "incoming") == []


def test_an_instance_over_max_instance_mb_is_refused_and_not_kept(node, tmp_path):
    n = node(config=_config(tmp_path, "[listener]\nmax_instance_mb = 1\n"))
    data, sop = _big_instance(_one_ct(tmp_path), 3 * MiB)
    with _scu(n, max_pdu=131072) as scu:
        rsp = scu.store(data, CT, sop)
        assert rsp.status == 0xC002 and "max_instance_mb" in rsp.comment
        assert scu.echo() == 0x0000
    _nothing_kept(n)
    assert echoscu(n.port).returncode == 0


def test_a_pdu_longer_than_the_limit_closes_the_connection(node):
    n = node(env=NO_WARM_UP)
    before = _peak_rss(n)
    with socket.create_connection(("127.0.0.1", n.port)) as sock:
        sock.settimeout(10)
        try:
            # a P-DATA-TF PDU announcing 2 GiB: the node hangs up instead of buffering it
            sock.sendall(b"\x04\x00" + struct.pack(">I", 0x7FFFFFF0) + bytes(8 * MiB))
            while sock.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError):
            pass
    assert _peak_rss(n) - before < 32 * MiB
    assert echoscu(n.port).returncode == 0


# -- 14. statuses: empty datasets, unexpected errors ---------------------------------------

@pytest.mark.parametrize("variant", ["no dataset (0x0101)", "an empty fragment", "none follows"])
def test_an_empty_dataset_gets_a_failure_status(node, tmp_path, variant):
    n = node(config=_config(tmp_path, "[listener]\ndataset_timeout_s = 1.0\n"))
    _, _, sop, _ = dataset_bytes(_one_ct(tmp_path))
    with _scu(n, timeout=20) as scu:
        started = time.monotonic()
        if variant == "no dataset (0x0101)":
            rsp = scu.store(NO_DATASET, CT, sop)
        elif variant == "an empty fragment":
            rsp = scu.store(b"", CT, sop, empty_fragment=True)
        else:
            rsp = scu.store(b"", CT, sop)
        assert rsp.status is not None and 0xC000 <= rsp.status <= 0xCFFF, rsp
        assert time.monotonic() - started < 10
        assert scu.echo() == 0x0000  # the association goes on
    _nothing_kept(n)
    assert echoscu(n.port).returncode == 0


def test_unexpected_errors_are_not_out_of_resources(tmp_path):
    from mvi_node.app.node import Node
    from mvi_node.config import load_settings

    settings = load_settings(None, {"data_dir": str(tmp_path / "var"), "listener.port": free_port(),
                                    "admin.enabled": False})
    node = Node(settings)
    node.start()
    try:
        data, sop_class, sop_uid, _ts = dataset_bytes(_one_ct(tmp_path))
        stager = node.listener.handlers.stager
        # RawStoreSCU takes each response off the queue itself: pynetdicom's send_c_* pause
        # their reactor with a window in which a fast response is dropped (tests/hostile.py)
        scu = RawStoreSCU(node.port, [(CT, ExplicitVRLittleEndian)])

        def boom(*a, **k):
            raise RuntimeError("a bug")

        stager.store_file = stager.store_received = boom
        rsp = scu.store(data, sop_class, sop_uid)
        assert rsp.status == 0xC000 and "internal error" in rsp.comment

        def disk_gone(*a, **k):
            raise OSError(5, "I/O error")

        stager.store_file = stager.store_received = disk_gone
        rsp = scu.store(data, sop_class, sop_uid)
        assert rsp.status == 0xA700 and "storage error" in rsp.comment
        assert scu.echo() == 0
        scu.release()
        assert node.index.counts()["instances"] == 0
    finally:
        node.stop()


def test_a_command_set_pynetdicom_refuses_ends_the_association_and_leaves_no_spool_file(node, tmp_path):
    """A C-STORE-RQ the node's hand-written decoder reads but pynetdicom's setters refuse
    (priority 7, PS3.7 allows 0-2) ends the association as pynetdicom's own decoder does,
    and its dataset, already spooled, is discarded."""
    from hostile import encode_store_command

    n = node()
    src = _one_ct(tmp_path)
    data, sop_class, sop_uid, _ts = dataset_bytes(src)
    command = encode_store_command(sop_class, sop_uid)
    bad = command.replace(struct.pack("<HHIH", 0, 0x0700, 2, 2), struct.pack("<HHIH", 0, 0x0700, 2, 7))
    assert bad != command
    scu = _scu(n)
    cx_id = scu.context_id(CT)
    with scu.reactor_paused():
        scu._send_pdv(cx_id, 0x03, bad)
        scu._send_pdv(cx_id, 0x02, data)
    # the SCU's reactor runs again, and sees the node's abort
    deadline = time.monotonic() + 10
    while scu.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not scu.alive and scu.assoc.is_aborted
    scu.abort()
    time.sleep(0.3)
    _nothing_kept(n)
    assert echoscu(n.port).returncode == 0
    with _scu(n) as ok:  # the next sender is served
        assert ok.store(data, sop_class, sop_uid).status == 0
