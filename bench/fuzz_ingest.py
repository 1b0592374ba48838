"""Adversarial ingest: mutated datasets against a live node, over real associations (#15 item 3).

Starts ``mvi-node serve`` on a fresh data folder (loopback only), then sends ``--count``
mutated datasets, each a C-STORE over one of a few associations, and checks after
every one and at the end:

- a proper status comes back (success, or 0xA900/0xC000-0xC002/0x0122 with an
  ErrorComment); never no answer, an abort, or 0xA700 (nothing here is a resource problem);
- nothing is left in ``incoming/`` once the answer is in, and no temporary file in
  ``staging/`` at the end; staged files are exactly the acknowledged instances;
- every acknowledged instance is readable by pydicom (``dcmread`` and every element's
  value, recursively, with the node's reading mode), holds the bytes sent and the
  SOP Instance UID it was sent under;
- the node stays up, answers C-ECHO, and its peak memory grows by less than
  ``--max-rss-growth-mb`` over the run.

Mutations (one to three per dataset, on the encoded stream): truncations, wrong VRs,
huge and undefined lengths, nested sequences (up to 80 deep), byte flips, splices,
a file meta group inside the dataset, wrong transfer syntax (bytes sent on another
syntax's context, deflated or not). Bases: a CT image (explicit, implicit, deflated,
RLE-encapsulated), a dose SR with nested content, an encapsulated PDF.

Each dataset is built from its own RNG, ``Random(seed * 1_000_003 + i)``: ``--only I``
replays dataset I of a seed alone.

Usage: python bench/fuzz_ingest.py --seed 1 --count 10000 [--json out.json] [--keep]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import struct
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from pydicom import config as pydicom_config, dcmread  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.filewriter import write_dataset  # noqa: E402
from pydicom.filebase import DicomBytesIO  # noqa: E402
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian,  # noqa: E402
                         RLELossless)

from hostile import RawStoreSCU  # noqa: E402
from mvi_node.common.filepool import not_spare  # noqa: E402

CT = "1.2.840.10008.5.1.4.1.1.2"
DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"
PDF = "1.2.840.10008.5.1.4.1.1.104.1"
SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, RLELossless)
OK_FAILURES = {0xA900, 0xC000, 0xC001, 0xC002, 0x0122}
MiB = 1 << 20

# explicit VRs, for "wrong VR" mutations
_VRS = [b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OD", b"OF",
        b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN",
        b"UR", b"US", b"UT", b"UV"]
_LONG = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


# -- bases ---------------------------------------------------------------------------

@dataclass
class Base:
    name: str
    dataset: Dataset
    sop_class: str
    syntax: str


def _bases(work: Path) -> list[Base]:
    from mvi_node.synth.plain_series import plain_ct_series
    from routed_objects import routed_extras

    ct_path = plain_ct_series(work / "ct", slices=1, matrix=32, seed=15)[0]
    extras = routed_extras(ct_path, work / "extras")
    ct = dcmread(ct_path)
    rle = dcmread(ct_path)
    rle.compress(RLELossless)
    dose = dcmread(extras["dose"])
    # nested content, as SRs have
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.TextValue = "nested"
    inner = Dataset()
    inner.RelationshipType = "HAS PROPERTIES"
    inner.ValueType = "NUM"
    item.ContentSequence = [inner]
    dose.ContentSequence = [item, item]
    pdf = dcmread(extras["pdf"])
    return [
        Base("ct-explicit", ct, CT, ExplicitVRLittleEndian),
        Base("ct-implicit", ct, CT, ImplicitVRLittleEndian),
        Base("ct-deflated", ct, CT, DeflatedExplicitVRLittleEndian),
        Base("ct-rle", rle, CT, RLELossless),
        Base("dose-sr", dose, DOSE_SR, ExplicitVRLittleEndian),
        Base("pdf", pdf, PDF, ExplicitVRLittleEndian),
    ]


def _encode(ds: Dataset, implicit: bool) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit
    clean = Dataset({e.tag: e for e in ds if e.tag.group != 0x0002})
    write_dataset(fp, clean)
    return fp.getvalue()


def _deflate(raw: bytes) -> bytes:
    z = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return z.compress(raw) + z.flush()


# -- element positions (for targeted mutations) ----------------------------------------

def _headers(raw: bytes, implicit: bool) -> list[tuple[int, int, int]]:
    """(offset of the header, offset of the length field, length field size) of the
    top-level elements and of sequence items' elements that a shallow scan finds."""
    out, pos = [], 0
    while pos + 8 <= len(raw):
        if implicit:
            length = struct.unpack_from("<I", raw, pos + 4)[0]
            out.append((pos, pos + 4, 4))
            value_at = pos + 8
        else:
            vr = raw[pos + 4:pos + 6]
            if vr in _LONG:
                if pos + 12 > len(raw):
                    break
                length = struct.unpack_from("<I", raw, pos + 8)[0]
                out.append((pos, pos + 8, 4))
                value_at = pos + 12
            else:
                length = struct.unpack_from("<H", raw, pos + 6)[0]
                out.append((pos, pos + 6, 2))
                value_at = pos + 8
        if length == 0xFFFFFFFF:
            break  # a shallow scan: stop at the first undefined length
        pos = value_at + length
    return out


# -- mutations -------------------------------------------------------------------------

def _truncate(rng: random.Random, raw: bytes, implicit: bool) -> bytes:
    if not raw:
        return raw
    heads = _headers(raw, implicit)
    if heads and rng.random() < 0.5:
        start, length_at, size = rng.choice(heads)
        cut = rng.randint(start, min(len(raw), length_at + size + 4))  # in a header or just after
    elif rng.random() < 0.5:
        cut = len(raw) - rng.randint(1, min(16, len(raw)))  # a few bytes short
    else:
        cut = rng.randrange(len(raw))
    return raw[:cut]


def _wrong_vr(rng: random.Random, raw: bytes, implicit: bool) -> bytes:
    heads = _headers(raw, False)
    if implicit or not heads:
        return _flip(rng, raw, implicit)
    start, _, _ = rng.choice(heads)
    vr = rng.choice(_VRS) if rng.random() < 0.8 else bytes([rng.randrange(256), rng.randrange(256)])
    return raw[:start + 4] + vr + raw[start + 6:]


def _huge_length(rng: random.Random, raw: bytes, implicit: bool) -> bytes:
    heads = _headers(raw, implicit)
    if not heads:
        return raw
    _, at, size = rng.choice(heads)
    if size == 2:
        value = struct.pack("<H", rng.choice([0xFFFF, 0xFFFE, rng.randrange(0x10000)]))
    else:
        value = struct.pack("<I", rng.choice([0xFFFFFFF0, 0x7FFFFFFF, 0xFFFFFFFE, rng.randrange(1 << 32),
                                              rng.randrange(1 << 24)]))
    return raw[:at] + value + raw[at + size:]


def _undefined_length(rng: random.Random, raw: bytes, implicit: bool) -> bytes:
    heads = [h for h in _headers(raw, implicit) if h[2] == 4]
    if not heads:
        return _huge_length(rng, raw, implicit)
    _, at, _ = rng.choice(heads)
    out = raw[:at] + b"\xff\xff\xff\xff" + raw[at + 4:]
    if rng.random() < 0.5:  # and maybe a sequence delimiter somewhere after
        where = rng.randint(at + 4, len(out))
        out = out[:where] + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0) + out[where:]
    return out


def _nested(rng: random.Random, raw: bytes, implicit: bool) -> bytes:
    """A private sequence (0009,1010) nested ``depth`` deep, inserted in tag order."""
    depth = rng.choice([1, 2, 5, 10, 20, 31, 32, 33, 40, 80])
    undefined = rng.random() < 0.5

    def seq(level: int) -> bytes:
        content = b""
        if level < depth:
            content = seq(level + 1)
        else:
            content = _element(0x0009, 0x1011, b"LO", b"leaf", implicit)
        if undefined:
            item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + content + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
            body = item + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
            length = 0xFFFFFFFF
        else:
            item = struct.pack("<HHI", 0xFFFE, 0xE000, len(content)) + content
            body, length = item, len(item)
        if implicit:
            return struct.pack("<HHI", 0x0009, 0x1010, length) + body
        return struct.pack("<HH", 0x0009, 0x1010) + b"SQ\x00\x00" + struct.pack("<I", length) + body

    block = seq(1)
    if rng.random() < 0.3:  # a damaged one: cut somewhere inside
        block = block[: rng.randrange(len(block))]
    at = 0
    for start, _, _ in _headers(raw, implicit):
        group = struct.unpack_from("<H", raw, start)[0]
        if group > 0x0009:
            at = start
            break
    return raw[:at] + block + raw[at:]


def _element(group: int, elem: int, vr: bytes, value: bytes, implicit: bool) -> bytes:
    if len(value) % 2:
        value += b" "
    if implicit:
        return struct.pack("<HHI", group, elem, len(value)) + value
    if vr in _LONG:
        return struct.pack("<HH", group, elem) + vr + b"\x00\x00" + struct.pack("<I", len(value)) + value
    return struct.pack("<HH", group, elem) + vr + struct.pack("<H", len(value)) + value


def _flip(rng: random.Random, raw: bytes, implicit: bool) -> bytes:
    if not raw:
        return raw
    out = bytearray(raw)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def _splice(rng: random.Random, raw: bytes, implicit: bool) -> bytes:
    if len(raw) < 4:
        return raw
    a = rng.randrange(len(raw))
    b = min(len(raw), a + rng.randint(1, 64))
    if rng.random() < 0.5:
        return raw[:a] + raw[b:]  # a chunk deleted
    return raw[:b] + raw[a:b] + raw[b:]  # a chunk repeated


def _file_meta_inside(rng: random.Random, raw: bytes, implicit: bool) -> bytes:
    meta = _element(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.2\x00", implicit)  # "big endian!"
    if rng.random() < 0.5:
        return meta + raw
    return b"\x00" * 128 + b"DICM" + raw  # a Part 10 preamble sent as the dataset


MUTATIONS = {
    "truncate": _truncate,
    "wrong_vr": _wrong_vr,
    "huge_length": _huge_length,
    "undefined_length": _undefined_length,
    "nested": _nested,
    "flip": _flip,
    "splice": _splice,
    "file_meta_inside": _file_meta_inside,
}
#: how often each is drawn
WEIGHTS = {"truncate": 3, "wrong_vr": 3, "huge_length": 3, "undefined_length": 2, "nested": 2, "flip": 3,
           "splice": 2, "file_meta_inside": 1}


@dataclass
class Sample:
    index: int
    base: str
    kinds: tuple[str, ...]
    sop_class: str
    sop_uid: str
    context_syntax: str  #: the presentation context it is sent on
    data: bytes


def make_sample(bases: list[Base], seed: int, index: int) -> Sample:
    rng = random.Random(seed * 1_000_003 + index)
    base = rng.choice(bases)
    ds = base.dataset.copy()
    sop_uid = f"2.25.{rng.getrandbits(120)}"
    ds.SOPInstanceUID = sop_uid
    syntax = base.syntax
    implicit = syntax == ImplicitVRLittleEndian
    raw = _encode(ds, implicit)
    names = list(WEIGHTS)
    kinds: list[str] = []
    wire_syntax = syntax
    if rng.random() < 0.08:
        kinds.append("wrong_syntax")  # bytes sent on another syntax's context
        wire_syntax = rng.choice([s for s in SYNTAXES if s != syntax])
    elif rng.random() < 0.05:
        kinds.append("none")  # an unmutated control
    if "none" not in kinds:
        for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
            kind = rng.choices(names, [WEIGHTS[n] for n in names])[0]
            kinds.append(kind)
            raw = MUTATIONS[kind](rng, raw, implicit)
    if syntax == DeflatedExplicitVRLittleEndian:
        raw = _deflate(raw)
        if rng.random() < 0.3:  # a damaged deflate stream too
            kinds.append("deflate_damage")
            raw = rng.choice([_truncate, _flip, _splice])(rng, raw, False)
    return Sample(index, base.name, tuple(kinds), base.sop_class, sop_uid, wire_syntax, raw)


# -- the node ------------------------------------------------------------------------

class Node:
    def __init__(self, work: Path, config_text: str) -> None:
        from conftest import NodeProcess, free_port

        self.config = work / "fuzz-node.toml"
        self.config.write_text(config_text)
        # no model warm-up: its ONNX sessions load in the background while the run's
        # memory is measured, and this run is about the listener's memory
        self.proc = NodeProcess(work / "var", free_port(), config=self.config, quiet=86400.0,
                                env={"MVI_LOG_LEVEL": "WARNING", "MVI_INFERENCE__WARM_UP": "false"})

    def __enter__(self):
        self.proc.start()
        return self

    def __exit__(self, *exc) -> None:
        self.proc.stop()

    @property
    def pid(self) -> int:
        return self.proc.proc.pid

    def memory(self) -> dict[str, int]:
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(("VmHWM:", "VmRSS:")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024
        return out


NODE_CONFIG = """
[listener]
max_inflated_mb = 64
dataset_timeout_s = 5.0
[admin]
enabled = false
"""


def _readable(path: Path) -> str | None:
    """None when pydicom reads the file and every element's value; else why not."""
    try:
        ds = dcmread(path)
        for elem in ds.iterall():
            _ = elem.value
        return None
    except Exception as exc:  # noqa: BLE001 - any failure is the finding
        return f"{type(exc).__name__}: {str(exc)[:120]}"


@dataclass
class Report:
    seed: int
    count: int
    seconds: float = 0.0
    statuses: Counter = field(default_factory=Counter)
    by_kind: dict = field(default_factory=dict)
    accepted: int = 0
    reconnects: int = 0
    failures: list = field(default_factory=list)
    memory: dict = field(default_factory=dict)

    def fail(self, sample: Sample | None, what: str) -> None:
        if len(self.failures) < 50:
            self.failures.append({"index": None if sample is None else sample.index,
                                  "base": None if sample is None else sample.base,
                                  "kinds": None if sample is None else list(sample.kinds), "what": what})

    def as_dict(self) -> dict:
        return {
            "seed": self.seed, "count": self.count, "seconds": round(self.seconds, 1),
            "per_second": round(self.count / self.seconds, 1) if self.seconds else None,
            "accepted": self.accepted, "refused": self.count - self.accepted,
            "statuses": {f"0x{k:04X}" if isinstance(k, int) else str(k): v for k, v in sorted(self.statuses.items(), key=str)},
            "by_kind": {k: dict(sorted(v.items())) for k, v in sorted(self.by_kind.items())}, "reconnects": self.reconnects, "memory": self.memory,
            "failures": self.failures,
        }


def run(seed: int, count: int, only: int | None = None, max_rss_growth_mb: int = 64, keep: bool = False,
        work: Path | None = None, progress: bool = False, start: int = 0) -> dict:
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE  # as the node reads
    own_work = work is None
    work = Path(tempfile.mkdtemp(prefix="mvi-fuzz-")) if own_work else Path(work)
    report = Report(seed, 1 if only is not None else count)
    bases = _bases(work / "bases")
    indices = [only] if only is not None else range(start, start + count)
    contexts = [(s, ts) for s in (CT, DOSE_SR, PDF) for ts in SYNTAXES]
    homes = {b.name: Path(str(b.dataset.StudyInstanceUID), str(b.dataset.SeriesInstanceUID)) for b in bases}
    try:
        with Node(work, NODE_CONFIG) as node:
            staging = node.proc.data_dir / "staging"
            incoming = node.proc.data_dir / "incoming"

            def connect() -> RawStoreSCU:
                return RawStoreSCU(node.proc.port, contexts, calling="FUZZER", timeout=30, max_pdu=16384)

            scu = connect()
            warm: int | None = None
            started = time.monotonic()
            for n, i in enumerate(indices):
                sample = make_sample(bases, seed, i)
                sent_at = time.monotonic()
                try:
                    rsp = scu.store(sample.data, sample.sop_class, sample.sop_uid,
                                    transfer_syntax=sample.context_syntax)
                except Exception as exc:  # noqa: BLE001
                    rsp = None
                    report.fail(sample, f"send failed: {type(exc).__name__}: {exc}")
                status = None if rsp is None else rsp.status
                report.statuses[status if status is not None else "none"] += 1
                for kind in set(sample.kinds):
                    report.by_kind.setdefault(kind, Counter())[f"0x{status:04X}" if status is not None else "none"] += 1
                if status is None:
                    report.fail(sample, f"no response in {time.monotonic() - sent_at:.1f} s")
                elif status == 0x0000:
                    report.accepted += 1
                    expected = staging / homes[sample.base] / f"{sample.sop_uid}.dcm"
                    found = [expected] if expected.exists() else list(staging.rglob(f"{sample.sop_uid}.dcm"))
                    if len(found) != 1:
                        report.fail(sample, f"acknowledged but {len(found)} staged files")
                    else:
                        why = _readable(found[0])
                        if why:
                            report.fail(sample, f"acknowledged but unreadable: {why}")
                        elif not found[0].read_bytes().endswith(sample.data):
                            report.fail(sample, "acknowledged but the stored bytes differ from those sent")
                        elif str(dcmread(found[0], stop_before_pixels=True).SOPInstanceUID) != sample.sop_uid:
                            report.fail(sample, "acknowledged under another SOP Instance UID")
                elif status not in OK_FAILURES:
                    report.fail(sample, f"status 0x{status:04X}")
                elif not rsp.comment:
                    report.fail(sample, f"status 0x{status:04X} without an ErrorComment")
                leftovers = not_spare(incoming)  # empty pool files are spares, not leftovers
                if leftovers:
                    report.fail(sample, f"{len(leftovers)} files left in incoming/")
                if not scu.alive:
                    report.reconnects += 1
                    if rsp is not None:
                        report.fail(sample, "association lost after an answer")
                    scu = connect()
                if n == min(20, count - 1):
                    warm = node.memory()["VmHWM"]
                if progress and n and n % 1000 == 0:
                    print(f"  {n} sent, {report.accepted} accepted, {len(report.failures)} failures", flush=True)
            report.seconds = time.monotonic() - started
            if scu.echo() != 0x0000:
                report.fail(None, "no C-ECHO on the fuzzing association at the end")
            scu.release()
            mem = node.memory()
            report.memory = {"peak_rss_mb": round(mem["VmHWM"] / MiB, 1), "rss_mb": round(mem["VmRSS"] / MiB, 1),
                             "peak_growth_mb": round((mem["VmHWM"] - (warm or mem["VmHWM"])) / MiB, 1)}
            if warm is not None and mem["VmHWM"] - warm > max_rss_growth_mb * MiB:
                report.fail(None, f"peak memory grew by {report.memory['peak_growth_mb']} MiB")
            from conftest import echoscu

            if echoscu(node.proc.port).returncode != 0:
                report.fail(None, "the node does not answer C-ECHO (DCMTK) at the end")
            temporaries = [p for p in staging.rglob(".tmp-*")]
            if temporaries:
                report.fail(None, f"{len(temporaries)} temporary files left in staging/")
            staged = list(staging.rglob("*.dcm"))
            if len(staged) != report.accepted:
                report.fail(None, f"{len(staged)} staged files for {report.accepted} acknowledged instances")
            if node.proc.proc.poll() is not None:
                report.fail(None, "the node exited")
    finally:
        if own_work and not keep and not report.failures:
            shutil.rmtree(work, ignore_errors=True)
    out = report.as_dict()
    if report.failures:
        out["kept"] = str(work)  # the node's data folder and log, for the post-mortem
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--start", type=int, default=0, help="first dataset index (default 0)")
    p.add_argument("--only", type=int, help="replay only dataset ONLY of the seed")
    p.add_argument("--max-rss-growth-mb", type=int, default=64)
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument("--keep", action="store_true", help="keep the node's data folder (kept anyway on a failure)")
    args = p.parse_args(argv)
    report = run(args.seed, args.count, args.only, args.max_rss_growth_mb, args.keep, progress=True,
                 start=args.start)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text)
    print(text if len(text) < 20000 else json.dumps({k: v for k, v in report.items() if k != "by_kind"}, indent=2))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
