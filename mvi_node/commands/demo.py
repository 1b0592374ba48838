"""``mvi-node demo``: the whole flow on one machine in about a minute.

Starts a node on embedded defaults (temporary data folder, free ports) and a throw-away
receiving peer standing in for PACS, makes one MVI-positive and one MVI-negative
synthetic CT exam without any tumour outline (as PACS routes them), sends them, waits
for the results, and prints the probabilities, the ROI source (the automatic
segmentation), where the SR, the secondary captures and the DICOM SEG went, and PNG
previews of the captures.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from mvi_node.common.scu import reactor_paused


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ReceivingPeer:
    """A minimal Storage SCP that files whatever it is sent (plays PACS)."""

    def __init__(self, folder: Path, ae_title: str = "DEMO_PACS") -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.ae = AE(ae_title=ae_title)
        self.ae.supported_contexts = AllStoragePresentationContexts
        self.ae.add_supported_context(Verification)
        self.received: list[Path] = []
        self._lock = threading.Lock()

    def _on_store(self, event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        path = self.folder / f"{ds.Modality}_{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        with self._lock:
            self.received.append(path)
        return 0x0000

    def start(self) -> "ReceivingPeer":
        self.ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        return self

    def stop(self) -> None:
        self.ae.shutdown()


def _send_folder(folder: Path, port: int) -> int:
    files = sorted(p for p in folder.rglob("*.dcm"))
    datasets = [dcmread(p) for p in files]
    ae = AE(ae_title="DEMO_MODALITY")
    for uid in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(uid, [str(datasets[0].file_meta.TransferSyntaxUID), "1.2.840.10008.1.2.1"])
    assoc = ae.associate("127.0.0.1", port, ae_title="MVI_NODE")
    if not assoc.is_established:
        raise RuntimeError("the node refused the association")
    accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    ok = 0
    try:
        for ds in datasets:
            if str(ds.SOPClassUID) not in accepted:  # e.g. a dose screen save: the node takes no SC
                continue
            with reactor_paused(assoc):
                status = assoc.send_c_store(ds)
            ok += getattr(status, "Status", 1) == 0
    finally:
        assoc.release()
    return ok


def _probability(sr: Dataset) -> float | None:
    """The MVI probability NUM of the first measurement group (private concept)."""
    for item in _walk(sr):
        name = item.get("ConceptNameCodeSequence")
        if item.get("ValueType") == "NUM" and name and "probability" in str(name[0].CodeMeaning).lower():
            return float(item.MeasuredValueSequence[0].NumericValue)
    return None


def _walk(ds: Dataset):
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _walk(item)


def run(out: Path, timeout: float = 110.0) -> int:
    from mvi_node.config import load_settings
    from mvi_node.logs import setup_logging
    from mvi_node.app.node import Node
    from mvi_node.report.sc import sc_preview_png
    from mvi_node.synth import make_exam

    setup_logging("WARNING")
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="mvi-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    peer = ReceivingPeer(out / "pacs").start()
    settings = load_settings(
        None,
        {
            "data_dir": str(work / "var"),
            "listener.port": _free_port(),
            "admin.port": _free_port(),
            "completion.quiet_seconds": 2.0,
            "completion.poll_seconds": 0.2,
            "dispatch.destinations": [f"DEMO_PACS@127.0.0.1:{peer.port}"],
        },
    )
    node = Node(settings)
    if node.engine is None:
        print("no model installed under models/: nothing to demonstrate", file=sys.stderr)
        return 2
    node.start()
    try:
        exams = {
            "MVI-positive": make_exam(work / "pos", "ct", seed=4242, index=0, mvi=True, hard_cases="none",
                                      annotations="none", matrix=256),
            "MVI-negative": make_exam(work / "neg", "ct", seed=4242, index=1, mvi=False, hard_cases="none",
                                      annotations="none", matrix=256),
        }
        for label, folder in (("MVI-positive", work / "pos"), ("MVI-negative", work / "neg")):
            sent = _send_folder(folder, settings.listener.port)
            print(f"sent {label} exam: {sent} instances")
        wanted = {uid for m in exams.values() for uid in m["study_instance_uids"]}
        deadline = time.monotonic() + timeout
        srs: dict[str, Dataset] = {}
        while time.monotonic() < deadline:
            for path in list(peer.received):
                if path.name.startswith("SR_"):
                    ds = dcmread(path)
                    srs[str(ds.StudyInstanceUID)] = ds
            if wanted <= set(srs) or len(srs) >= len(exams):
                break
            time.sleep(0.5)
        time.sleep(1.0)  # the captures follow the SR on the same association
        print()
        for label, manifest in exams.items():
            study = next((u for u in manifest["study_instance_uids"] if u in srs), None)
            if study is None:
                print(f"{label}: no result arrived within {timeout:.0f} s")
                continue
            sr = srs[study]
            p = _probability(sr)
            print(f"{label} (truth {manifest['grade']}): {sr.get('ContentDescription', '')}"
                  + (f" (probability {p:.3f})" if p is not None else ""))
            scs = sorted(f for f in peer.received if f.name.startswith("OT_") or f.name.startswith("SC_"))
            mine = [f for f in scs if str(dcmread(f, stop_before_pixels=True).StudyInstanceUID) == study]
            roi = next((str(i.TextValue) for i in _walk(sr) if i.ValueType == "TEXT"
                        and str(i.TextValue).startswith("ROI source:")), "ROI source: annotation in the exam")
            print(f"  {roi.split(' (')[0]}")
            print(f"  SR  -> {peer.folder / ('SR_' + str(sr.SOPInstanceUID) + '.dcm')}")
            for f in sorted(peer.received):
                if f.name.startswith("SEG_") and str(dcmread(f, stop_before_pixels=True).StudyInstanceUID) == study:
                    print(f"  SEG -> {f}")
            for i, f in enumerate(mine):
                png = out / f"{label}-gradcam-{i + 1}.png"
                sc_preview_png(dcmread(f), png)
                print(f"  SC  -> {f}  (preview {png})")
        print(f"\nresults went to DEMO_PACS@127.0.0.1:{peer.port}; demo took {time.monotonic() - started:.0f} s")
        return 0 if len(srs) >= len(exams) else 1
    finally:
        node.stop()
        peer.stop()


def cmd_demo(args: argparse.Namespace) -> int:
    return run(Path(args.out))


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the whole flow once on synthetic exams (node + receiving peer)")
    p.add_argument("--out", default="mvi-demo", help="where the received results and PNG previews go")
    p.set_defaults(func=cmd_demo)
