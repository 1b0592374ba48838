"""MR header facts beyond plain attributes: Dixon/subtraction image kinds and b-values.

**Image kind** of a T1 image: ``water`` / ``fat`` / ``in_phase`` / ``opposed_phase`` /
``in_opposed`` (both echoes in one series) / ``fat_fraction`` / ``subtraction`` / ``""``
(an ordinary magnitude image). Evidence, strongest first:

1. ImageType (0008,0008) values 3 and on (then an Enhanced frame's FrameType), as
   vendors write them: Siemens Dixon
   ``DIXON`` with ``W`` / ``F`` / ``IN_PHASE`` / ``OPP_PHASE``; GE IDEAL / FLEX /
   LAVA-Flex ``WATER`` / ``FAT`` / ``IN PHASE`` / ``OUT PHASE``; ``SUBTRACTION`` /
   ``SUB``; ``FF`` fat fraction.
2. EchoTime pairs: images of one acquisition (same time, geometry and TR) at two echo
   times are a chemical-shift pair. Fat and water precess 3.4 ppm apart (217 Hz at
   1.5 T, 434 Hz at 3 T), so an echo at an odd number of half periods is opposed phase
   (2.3 ms at 1.5 T, 1.15 ms at 3 T) and one at whole periods in phase (4.6 / 2.3 ms).
   A single echo says nothing: 3 T dynamics often use an opposed-phase TE. Nor do two
   unlabelled images at one echo time (a computed water map carries its first echo's
   time): those stay unclassified and are judged by the sequence comparison.
3. SeriesDescription, last: words for water/fat/in/opposed phase/subtraction. A
   description naming a computed map (water, fat, fraction, subtraction) wins over an
   echo time, which only tells which echo the map was computed from.

**b-value**: DiffusionBValue (0018,9087), also in MRDiffusionSequence of Enhanced MR;
else the vendor's private element, read only under its private creator (PS3.5 7.8.1:
the element number's high byte is the block the creator reserved):
GE ``GEMS_PARM_01`` (0043,xx39) first value, minus the 1e9 some software versions add;
Siemens ``SIEMENS MR HEADER`` (0019,xx0C); Philips ``Philips Imaging DD 001``
(2001,xx03). Canon/Toshiba write the standard tag; classic (non-enhanced) Canon exports
put ``b=1500(...)`` in ImageComments (dcm2niix's Canon notes), which is read next. Last
the Siemens SequenceName ``*ep_b800t``.
"""

from __future__ import annotations

import re
import struct
import unicodedata
from typing import Any, Iterable

from pydicom.dataset import Dataset

KINDS = ("water", "fat", "in_phase", "opposed_phase", "in_opposed", "fat_fraction", "subtraction")
#: kinds that are never a phase of the dynamic series (water maps are, when the dynamic is water maps)
NEVER_DYNAMIC = frozenset(KINDS) - {"water"}

_TYPE_KINDS = {
    "W": "water", "WATER": "water",
    "F": "fat", "FAT": "fat",
    "IN_PHASE": "in_phase", "IN PHASE": "in_phase", "INPHASE": "in_phase", "IP": "in_phase",
    "OPP_PHASE": "opposed_phase", "OUT_PHASE": "opposed_phase", "OUT PHASE": "opposed_phase",
    "OPP PHASE": "opposed_phase", "OUTPHASE": "opposed_phase", "OPPOSED": "opposed_phase", "OP": "opposed_phase",
    "FF": "fat_fraction", "FAT_FRACTION": "fat_fraction", "FATFRACTION": "fat_fraction", "PDFF": "fat_fraction",
    "SUB": "subtraction", "SUBTRACTION": "subtraction", "SUBTRACT": "subtraction", "SUBTRACTED": "subtraction",
}

_SUB_RE = re.compile(r"(?<![a-z])sub(?![a-z])|subtra[ck]|(?<![a-z])sub[- _]?[0-9]|减影|減影|サブトラ")
_FF_RE = re.compile(r"fat[- _]?frac|(?<![a-z])(pdff|ff)(?![a-z])")
_IN_RE = re.compile(r"(?<![a-z])in[- _]?phase|(?<![a-z])(ip|inphase)(?![a-z])|(?<![a-z])in[-/_ ]+(opp|out)"
                    r"|(opp|out)[-/_ ]+in(?![a-z])|同相位|同位相")
_OPP_RE = re.compile(r"(out|opp)[- _]?phase|opposed|(?<![a-z])(op|opp|outphase)(?![a-z])|gegenphase|反相位|逆位相")
_DUAL_RE = re.compile(r"dual[- _]?echo")
_FAT_RE = re.compile(r"(?<![a-z])fat(?![- _]?(sat|supp|sup|s(?![a-z])))(?![a-z])|fat[- _]?only|脂肪像|水脂分离脂")
_WATER_RE = re.compile(r"(?<![a-z])water(?![- _]?(fat|excit))|(?<![a-z])wasser(?![a-z])|水像")
# single-letter W/F and "in" tokens only where the description names a Dixon technique
_DIXON_RE = re.compile(r"dixon|flex|ideal|(?<![a-z])wfs(?![a-z])|fat[- _]?water|water[- _]?fat")
_W_TOKEN = re.compile(r"(?<![a-z0-9])w(?![a-z0-9/])")
_F_TOKEN = re.compile(r"(?<![a-z0-9])f(?![a-z0-9/])")
_IN_TOKEN = re.compile(r"(?<![a-z0-9])in(?![a-z0-9])")

FAT_WATER_PPM = 3.4
GYROMAGNETIC_MHZ_PER_T = 42.577


def _norm(text: Any) -> str:
    return unicodedata.normalize("NFKC", str(text or "")).casefold()


def kind_from_image_type(ds: Dataset) -> tuple[str, str]:
    """(kind, basis) from ImageType values 3 and on, then FrameType (0008,9007) of an
    Enhanced MR frame (Philips Enhanced mDIXON: ImageType ``T1\\MIXED``, FrameType
    ``DIXON\\WATER`` / ``FAT`` / ``FAT_FRACTION``); ("", "") when they say nothing."""
    for keyword in ("ImageType", "FrameType"):
        values = [str(v).strip().upper() for v in (ds.get(keyword) or [])]
        for v in values[2:]:
            if v in _TYPE_KINDS:
                return _TYPE_KINDS[v], f"{keyword} {v}"
    return "", ""


def kind_from_description(ds: Dataset) -> tuple[str, str]:
    """(kind, basis) from SeriesDescription: the last resort."""
    raw = str(ds.get("SeriesDescription", "") or "")
    text = _norm(raw)
    if not text:
        return "", ""
    basis = f"SeriesDescription {raw!r}"
    if _SUB_RE.search(text):
        return "subtraction", basis
    if _FF_RE.search(text):
        return "fat_fraction", basis
    dixon = bool(_DIXON_RE.search(text))
    inn = bool(_IN_RE.search(text)) or (dixon and bool(_IN_TOKEN.search(text)))  # "t1_vibe_dixon_tra_in"
    opp = bool(_OPP_RE.search(text))
    if (inn and opp) or _DUAL_RE.search(text):
        return "in_opposed", basis
    if inn or opp:
        return ("in_phase" if inn else "opposed_phase"), basis
    if _FAT_RE.search(text) or (dixon and _F_TOKEN.search(text)):
        return "fat", basis
    if _WATER_RE.search(text) or (dixon and _W_TOKEN.search(text)):
        return "water", basis
    return "", ""


def _num(value: Any) -> float | None:
    try:
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = value[0] if len(value) else None
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def larmor_mhz(ds: Dataset) -> float | None:
    """Proton frequency: ImagingFrequency, else MagneticFieldStrength x 42.577 MHz/T."""
    f = _num(ds.get("ImagingFrequency"))
    if f:
        return f
    b0 = _num(ds.get("MagneticFieldStrength"))
    if b0 and b0 > 10:  # some old headers give gauss
        b0 /= 10000.0
    return b0 * GYROMAGNETIC_MHZ_PER_T if b0 else None


def chemical_shift_phase(te_ms: float, mhz: float) -> str:
    """'opposed_phase' / 'in_phase' / '' for an echo at ``te_ms`` on a ``mhz`` scanner."""
    cycles = te_ms * 1e-3 * FAT_WATER_PPM * mhz  # ppm x MHz = Hz
    frac = cycles % 1.0
    if 0.3 <= frac <= 0.7:
        return "opposed_phase"
    if frac <= 0.2 or frac >= 0.8:
        return "in_phase"
    return ""


def mark_echo_pairs(units: Iterable[Any]) -> None:
    """Chemical-shift pairs among the MR T1 units of an exam (see the module docstring).

    Updates ``features['image_kind']`` / ``['image_kind_basis']`` where ImageType did
    not decide and a description does not name a computed map.
    """
    candidates = [u for u in units if u.features.get("mr_sequence") in ("t1_gre", "t1_2d")
                  and u.features.get("acquisition_seconds") is not None]
    for u in candidates:
        tes = u.features.get("echo_times") or []
        if len(tes) >= 2 and not _decided(u):
            _set(u, "in_opposed", f"EchoTime {tes[0]:g}/{tes[1]:g} ms in one series")
    groups: list[list[Any]] = []
    for u in sorted(candidates, key=lambda u: u.features["acquisition_seconds"]):
        for g in groups:
            if _same_acquisition(g[0], u):
                g.append(u)
                break
        else:
            groups.append([u])
    for g in groups:
        tes = sorted({u.features.get("echo_time") for u in g if u.features.get("echo_time") is not None})
        if len(tes) < 2:
            continue
        mhz = larmor_mhz(g[0].ds)
        # echoes of a chemical-shift pair lie about half a fat-water period apart (2.3 ms at
        # 1.5 T, 1.15 ms at 3 T); two series a fraction of a millisecond apart are not one
        half_period = 1e3 / (2 * FAT_WATER_PPM * mhz) if mhz else 1.15
        if tes[-1] - tes[0] < 0.6 * half_period:
            continue
        undecided = [u for u in g if u.features.get("echo_time") is not None and not _decided(u)]
        per_te = {}
        for u in undecided:
            per_te.setdefault(u.features["echo_time"], []).append(u)
        for u in undecided:
            te = u.features["echo_time"]
            if len(per_te[te]) > 1:
                continue  # an unlabelled computed map and the echo itself: which is which is unknown
            if mhz:
                kind = chemical_shift_phase(te, mhz)
                how = f"{mhz:.2f} MHz"
            else:  # 2-point Dixon acquires the opposed echo first
                kind = "opposed_phase" if te == tes[0] else "in_phase"
                how = "field strength unknown: the shorter echo taken as opposed phase"
            if kind:
                _set(u, kind, f"EchoTime pair {'/'.join(f'{t:g}' for t in tes)} ms of one acquisition "
                              f"(this one {te:g} ms; {how})")


def _decided(u) -> bool:
    basis = u.features.get("image_kind_basis", "")
    if basis.startswith(("ImageType", "FrameType", "EchoTime")):
        return True
    # a description naming a computed map beats the echo time it was computed from
    return u.features.get("image_kind") in ("water", "fat", "fat_fraction", "subtraction")


def _set(u, kind: str, basis: str) -> None:
    u.features["image_kind"] = kind
    u.features["image_kind_basis"] = basis


def _same_acquisition(a, b) -> bool:
    fa, fb = a.features, b.features
    if abs(fa["acquisition_seconds"] - fb["acquisition_seconds"]) > 5.0:
        return False
    if (fa.get("orientation"), fa.get("distinct_positions")) != (fb.get("orientation"), fb.get("distinct_positions")):
        return False
    ta, tb = fa.get("repetition_time"), fb.get("repetition_time")
    return ta is None or tb is None or abs(ta - tb) <= 0.05 * max(ta, tb)


def kind_features(datasets: list[Dataset]) -> dict[str, Any]:
    """``image_kind``, ``image_kind_basis`` (ImageType, else description) and
    ``echo_times`` of a unit; :func:`mark_echo_pairs` refines them across the exam."""
    ds = datasets[0]
    kind, basis = kind_from_image_type(ds)
    if not kind:
        kind, basis = kind_from_description(ds)
    # EffectiveEchoTime: Enhanced MR frames (PS3.3 C.8.13.5.7)
    tes = sorted({t for t in (_num(d.get("EchoTime", d.get("EffectiveEchoTime"))) for d in datasets) if t is not None})
    return {"image_kind": kind, "image_kind_basis": basis, "echo_times": tes}


# --- b-values ----------------------------------------------------------------------------
# (group, element low byte, private creator, manufacturer word, decode)
_PRIVATE_B = (
    (0x0043, 0x39, "GEMS_PARM_01", "GE", "first"),
    (0x0019, 0x0C, "SIEMENS MR HEADER", "SIEMENS", "first"),
    (0x2001, 0x03, "Philips Imaging DD 001", "PHILIPS", "float"),
)
_COMMENT_B = re.compile(r"(?<![a-z])b\s*=\s*(\d+(?:\.\d+)?)", re.I)
_SEQNAME_B = re.compile(r"ep_b(\d+)")


def private_element(ds: Dataset, group: int, creator: str, offset: int):
    """The element ``offset`` of ``creator``'s block in ``group``, or None (creator absent)."""
    for elem in ds.group_dataset(group):
        value = elem.value.decode("ascii", "ignore") if isinstance(elem.value, bytes) else str(elem.value)
        if 0x0010 <= elem.tag.element <= 0x00FF and value.strip("\x00 ") == creator:
            return ds.get((group, (elem.tag.element << 8) | offset))
    return None


def _decode(elem, how: str) -> float | None:
    raw = elem.value
    if isinstance(raw, bytes):  # UN (implicit VR read without the private dictionary)
        if how == "float" and len(raw) in (4, 8):
            return struct.unpack("<f" if len(raw) == 4 else "<d", raw)[0]
        raw = raw.decode("ascii", "ignore").strip("\x00 ").split("\\")
    v = _num(raw)
    if v is None:
        return None
    if how == "first" and v >= 1e9:
        v -= 1e9 * int(v // 1e9)  # GE: 1000000800 means b = 800
    return v


def b_value(ds: Dataset, param=None) -> tuple[float | None, str]:
    """(b-value, the element it came from) of one instance; (None, "") when none says.

    ``param`` looks a keyword up in Enhanced MR functional groups too (series.param).
    """
    v = _num(param(ds, "DiffusionBValue") if param else ds.get("DiffusionBValue"))
    if v is not None:
        return v, "DiffusionBValue (0018,9087)"
    maker = str(ds.get("Manufacturer", "") or "").upper()
    for group, offset, creator, vendor, how in _PRIVATE_B:
        if vendor not in maker:
            continue
        elem = private_element(ds, group, creator, offset)
        if elem is not None and elem.value not in (None, b"", ""):
            v = _decode(elem, how)
            if v is not None:
                return v, f"{creator} ({group:04X},xx{offset:02X})"
    m = _COMMENT_B.search(str(ds.get("ImageComments", "") or ""))
    if m and re.search(r"CANON|TOSHIBA", maker):
        return float(m.group(1)), "ImageComments b=... (Canon)"
    m = _SEQNAME_B.search(str(ds.get("SequenceName", "") or ""))
    if m:
        return float(m.group(1)), "SequenceName *ep_b..."
    return None, ""
