"""The receive pool: one fsync per acknowledged instance, and what a crash leaves in it.

A pool file's name is durable before it is handed out; an instance received into it is
sealed (length and CRC in the preamble, then ``fdatasync``) and renamed into staging
without a folder fsync. A power loss can undo that rename: start-up must then stage what
it finds sealed in the pool, and remove what was never sealed (never acknowledged).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydicom import dcmread

from mvi_node.common.filepool import POOL_PREFIX, FilePool, is_sealed, not_spare
from mvi_node.receive.incoming import IncomingFile, Spool
from mvi_node.stage.file_meta import encode_file_meta
from mvi_node.stage.index import StagingIndex
from mvi_node.stage.reconcile import reconcile
from mvi_node.synth.plain_series import plain_ct_series

from conftest import storescu

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"


def _dataset_part(path: Path) -> tuple[str, bytes]:
    """(SOPInstanceUID, the dataset's bytes after its file meta) of a DICOM file."""
    ds = dcmread(path, stop_before_pixels=True)
    raw = path.read_bytes()
    meta_end = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
    return str(ds.SOPInstanceUID), raw[meta_end:]


def _receive(pool: FilePool, source: Path, seal: bool = True, cut: int = 0) -> IncomingFile:
    """Write ``source``'s dataset into a pool file as the listener does (pynetdicom's
    preamble and prefix first, then fragments), optionally cut short and sealed."""
    sop, dataset = _dataset_part(source)
    incoming = IncomingFile(Spool(pool.directory, 1 << 30, pool), encode_file_meta(CT, sop, EXPLICIT, "SENDER"))
    incoming.write(b"\x00" * 128 + b"DICM")
    data = dataset[: len(dataset) - cut]
    for start in range(0, len(data), 16384):
        incoming.write(data[start:start + 16384])
        incoming.file.flush()
    if seal:
        incoming.seal()
    incoming.close()
    return incoming


def test_pool_hands_out_durable_names_and_refills_in_the_background(tmp_path):
    pool = FilePool(tmp_path / "incoming", size=4)
    pool.start()
    try:
        taken = [pool.take() for _ in range(4)]
        assert all(t is not None and Path(t).name.startswith(POOL_PREFIX) for t in taken)
        assert len(set(taken)) == 4 and all(Path(t).stat().st_size == 0 for t in taken)
        deadline = time.monotonic() + 10
        while pool.created < 8 and time.monotonic() < deadline:  # woken below half: refilled
            time.sleep(0.02)
        assert pool.created == 8
        assert pool.take() not in taken
    finally:
        pool.stop()
    other = FilePool(tmp_path / "incoming", size=2)
    other.fill()
    assert other.take() not in taken  # two processes' pools never share a file


def test_an_empty_pool_gives_none_and_the_listener_falls_back_to_a_new_file(tmp_path):
    pool = FilePool(tmp_path / "incoming", size=1)
    assert pool.take() is None  # never filled
    incoming = IncomingFile(Spool(tmp_path / "incoming", 1 << 20, pool), b"\x00" * 132)
    assert not incoming.pooled and not incoming.sealable
    incoming.discard()


def test_seal_detects_a_cut_or_changed_file(tmp_path):
    source = plain_ct_series(tmp_path / "src", slices=1, matrix=64, seed=3)[0]
    pool = FilePool(tmp_path / "incoming", size=3)
    pool.fill()
    whole = Path(_receive(pool, source).name)
    assert is_sealed(whole)
    assert dcmread(whole).SOPInstanceUID == dcmread(source).SOPInstanceUID  # still plain DICOM
    unsealed = Path(_receive(pool, source, seal=False).name)
    assert not is_sealed(unsealed)
    changed = Path(_receive(pool, source).name)
    raw = bytearray(changed.read_bytes())
    raw[-7] ^= 0x01
    changed.write_bytes(bytes(raw))
    assert not is_sealed(changed)
    with open(whole, "r+b") as fh:  # cut by one byte
        fh.truncate(whole.stat().st_size - 1)
    assert not is_sealed(whole)


def test_start_up_stages_sealed_pool_files_and_removes_the_rest(tmp_path):
    """The state a power loss can leave after acknowledgements whose rename into staging
    never reached the disk: those instances are staged at start-up; a file cut short (never
    sealed, never acknowledged) and the spares are removed."""
    series = plain_ct_series(tmp_path / "src", slices=3, matrix=64, seed=4)
    incoming, staging = tmp_path / "incoming", tmp_path / "staging"
    pool = FilePool(incoming, size=6)
    pool.fill()
    acked = [_receive(pool, p) for p in series[:2]]
    _receive(pool, series[2], seal=False, cut=100)  # the one in flight at the crash
    assert len(not_spare(incoming)) == 3 and len(os.listdir(incoming)) == 6
    index = StagingIndex(tmp_path / "index.sqlite3")

    report = reconcile(staging, index, tmp_path / "quarantine", incoming)
    assert report.recovered == 2 and report.temporary_removed == 1
    assert os.listdir(incoming) == []
    for source, received in zip(series[:2], acked):
        sop, dataset = _dataset_part(source)
        assert index.contains(sop)
        (staged,) = staging.rglob(f"{sop}.dcm")
        assert _dataset_part(staged) == (sop, dataset)  # the bytes as sent
        assert dcmread(staged).file_meta.SourceApplicationEntityTitle == "SENDER"
    assert not index.contains(_dataset_part(series[2])[0])
    # recovered instances open a round like any other: the study becomes a job
    assert [d.study_uid for d in index.due_studies(0.0, now=time.time() + 1)] == [
        str(dcmread(series[0]).StudyInstanceUID)]


def test_a_node_stages_a_sealed_file_it_finds_at_start_up(node, tmp_path):
    """Over DICOM: a series sent to the node lands in staging through the pool; a sealed
    file left in the pool of a stopped node is staged and processed when it starts again."""
    series = plain_ct_series(tmp_path / "src", slices=4, matrix=64, seed=6)
    n = node(quiet=1.0)
    assert storescu(n.port, *series[:3]).returncode == 0
    st = n.wait_jobs(1)
    assert st["instances"] == 3
    assert not_spare(n.data_dir / "incoming") == []  # every pool file used was renamed away
    assert any(p.name.startswith(POOL_PREFIX) for p in (n.data_dir / "incoming").iterdir())  # spares
    assert n.stop() == 0
    pool = FilePool(n.data_dir / "incoming", size=1)
    pool.fill()
    lost_rename = _receive(pool, series[3])
    n.start()
    st = n.wait_jobs(2)
    sop = _dataset_part(series[3])[0]
    assert st["instances"] == 4 and not Path(lost_rename.name).exists()
    assert len(list((n.data_dir / "staging").rglob(f"{sop}.dcm"))) == 1
    assert "1 acknowledged instances staged from the receive pool" in n.log_text()
