"""The node's own outgoing associations lose no response to pynetdicom's reactor.

pynetdicom's ``send_c_*`` pause the association's reactor thread through a flag that is
stale for a moment after the reactor wakes (see :mod:`mvi_node.common.scu`); a response
that is on the DIMSE queue while the reactor polls in that moment is taken and dropped.
On a busy machine the two threads line up like that now and then; these tests make it
happen every time: after each wake-up the reactor lingers (as if descheduled) until a
message is on the queue or 0.3 s have passed, and the sending thread is held 0.6 s after
each send, so a real loopback SCP's answer waits on the queue. pynetdicom's plain pattern
then loses the response and the sender waits out its DIMSE timeout; the node's senders
get every one.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from mvi_node.config.destination import Destination
from mvi_node.dispatch.sender import echo, send_files

LINGER_S = 0.3
SENDER_DELAY_S = 0.6


class _LateWakeCheckpoint(threading.Event):
    """The reactor's checkpoint; the reactor thread (the association's own) lingers right
    after each wake-up until the DIMSE queue holds a message, which opens pynetdicom's
    window every time instead of rarely."""

    def __init__(self, assoc) -> None:
        super().__init__()
        self.reactor, self.queue = assoc, assoc.dimse.msg_queue
        self.set()

    def wait(self, timeout=None) -> bool:
        ok = super().wait(timeout)
        if threading.current_thread() is self.reactor:
            deadline = time.monotonic() + LINGER_S
            while self.queue.empty() and time.monotonic() < deadline:
                time.sleep(0.001)
        return ok


@pytest.fixture
def slow_reactors(monkeypatch):
    original = AE.associate

    def associate(self, *args, **kwargs):
        assoc = original(self, *args, **kwargs)
        if assoc.is_established:
            assoc._reactor_checkpoint = _LateWakeCheckpoint(assoc)
            time.sleep(0.01)  # the reactor's next pass picks the new checkpoint up
            send_msg = assoc.dimse.send_msg

            def held_after_sending(*a, **kw):
                send_msg(*a, **kw)
                if threading.current_thread() is not assoc:
                    time.sleep(SENDER_DELAY_S)

            assoc.dimse.send_msg = held_after_sending
        return assoc

    monkeypatch.setattr(AE, "associate", associate)


@pytest.fixture
def fast_scp():
    """A pynetdicom storage SCP on loopback that answers every store and echo at once."""
    stored: list[str] = []
    ae = AE(ae_title="FASTSCP")
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.add_supported_context(Verification)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def on_store(event):
        stored.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield Destination("FASTSCP", "127.0.0.1", port), stored
    finally:
        server.shutdown()


def _ct_files(folder, n: int) -> list:
    files = []
    for i in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
        ds.Modality, ds.InstanceNumber = "CT", i + 1
        path = folder / f"ct{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def test_dispatch_gets_every_response_when_the_reactor_wakes_late(tmp_path, slow_reactors, fast_scp):
    dest, stored = fast_scp
    files = _ct_files(tmp_path, 3)
    report = send_files(dest, files, calling_ae="MVI_NODE", timeout=2.0)
    assert len(report.sent) == 3 and stored == report.sent


def test_plain_pynetdicom_loses_a_response_in_the_same_conditions(tmp_path, slow_reactors, fast_scp):
    """The fault injection is what it claims: without the node's pause a store's response
    is taken by the reactor and the sender gets none within its timeout."""
    from pydicom import dcmread

    dest, stored = fast_scp
    ae = AE(ae_title="MVI_NODE")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.dimse_timeout = 2.0
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(dcmread(_ct_files(tmp_path, 1)[0]))
    finally:
        if assoc.is_established:
            assoc.release()
    assert len(stored) == 1  # the SCP stored it and answered at once ...
    assert getattr(status, "Status", None) is None  # ... and the answer was lost


def test_echo_readiness_check_gets_its_answer_when_the_reactor_wakes_late(slow_reactors, fast_scp):
    dest, _ = fast_scp
    assert all(echo(dest, timeout=2.0) for _ in range(2))


def test_replay_query_gets_every_match_when_the_reactor_wakes_late(slow_reactors):
    """C-FIND answers come as several responses; one taken by the reactor would be a study
    missing from a replay's worklist without any error."""
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND  # type: ignore[attr-defined]

    from mvi_node.replay.sources import DimseArchive

    ae = AE(ae_title="FINDSCP")
    ae.add_supported_context(FIND)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uids = [generate_uid() for _ in range(2)]

    def on_find(event):
        for uid in uids:
            ds = Dataset()
            ds.QueryRetrieveLevel, ds.StudyInstanceUID = "STUDY", uid
            yield 0xFF00, ds

    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find)])
    try:
        archive = DimseArchive("pacs", "FINDSCP", "127.0.0.1", port, "MVI_NODE", timeout_s=2.0)
        found = archive.find_studies()
    finally:
        server.shutdown()
    assert sorted(str(d.StudyInstanceUID) for d in found) == sorted(uids)
