"""Series summaries from headers: the units the engine gives roles to.

A *unit* is a whole series, or one dynamic phase of a series that holds several
(``<SeriesInstanceUID>#<TemporalPositionIdentifier>``). Only headers are read
(``stop_before_pixels``); the representative dataset of a unit (lowest InstanceNumber)
is what rules look at, and :func:`unit_features` adds values computed from all of its
instances.

DICOM attributes used: SOPClassUID, Modality, SeriesInstanceUID, StudyInstanceUID,
InstanceNumber, ImagePositionPatient, ImageOrientationPatient, SliceThickness,
TemporalPositionIdentifier, TriggerTime, AcquisitionTime/AcquisitionDateTime,
ContentTime, SeriesTime, ContrastBolusStartTime, ContrastBolusAgent,
ContrastBolusAgentSequence, RepetitionTime, EchoTime, FlipAngle, ScanningSequence,
SequenceVariant, ScanOptions, MRAcquisitionType, DiffusionBValue, SequenceName,
NumberOfFrames.
"""

from __future__ import annotations

import logging
import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from mvi_node.common.frames import frame_datasets

from mvi_node.select.mr_headers import b_value, kind_features



class HeaderSource(Protocol):
    """Where :func:`read_headers` takes headers from instead of parsing each file
    (:class:`mvi_node.select.headers.HeaderCache`, which parses with :func:`read_header`)."""

    def read(self, path: Path) -> Dataset: ...

log = logging.getLogger(__name__)

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
# SOP classes without pixel data that still carry a role (seg/annotation) or `other`.
_NON_IMAGE_HINTS = ("SR Storage", "Presentation State", "Segmentation", "RT Structure", "Key Object", "Waveform")

# Hepatocyte-specific agent names (gadoxetate); anything else gadolinium-based is
# extracellular for this purpose (gadobenate's 3-5 % biliary uptake gives no 20 min HBP).
HEPATOBILIARY_AGENT_RE = re.compile(r"eob|gadoxet|primovist|eovist|gd[- ]?eob|普美显|钆塞酸|プリモビスト|ガドキセト", re.I)
EXTRACELLULAR_AGENT_RE = re.compile(
    r"gado(?!xet|lin)|gd[- ]?(dtpa|dota|bt|hp)|dotarem|clariscan|gadovist|gadavist|magnevist|prohance|"
    r"multihance|omniscan|optimark|elucirem|vueway|artirem|dotagraf|cyclolux",
    re.I,
)
_NO_AGENT_RE = re.compile(r"^\s*(none|no|nil|n/?a|without|keine?|ninguno|aucun|nessuno|0)\s*$", re.I)


def read_headers(path: Path, cache: HeaderSource | None = None) -> list[tuple[Path, Dataset]]:
    """Every DICOM header under ``path`` (recursive), pixel data not read.

    Non-DICOM files and DICOMDIR (Media Storage Directory) are skipped: a DICOMDIR read
    as a series is a known failure of other selectors. ``cache``
    (:class:`mvi_node.select.headers.HeaderCache`): headers parsed before are taken from it.
    """
    read = cache.read if cache is not None else read_header
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    out = []
    seen: set[str] = set()
    for f in files:
        if f.name.upper() == "DICOMDIR" or f.name.startswith("."):
            continue
        try:
            ds = read(f)
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as exc:
            log.debug("skipping %s: %s", f, exc)
            continue
        if ds is None:
            continue
        meta_class = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
        if meta_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
            continue
        sop = str(ds.get("SOPInstanceUID", "") or "")
        if not sop or "SeriesInstanceUID" not in ds or sop in seen:
            continue
        seen.add(sop)
        out.append((f, ds))
    return out


def read_header(path: Path) -> Dataset | None:
    """Header of a DICOM file; also a raw dataset without preamble (older exports)
    when it starts like one (group 0002 or 0008, little endian). None otherwise."""
    try:
        return dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head[:2] not in (b"\x02\x00", b"\x08\x00"):
            return None
        return dcmread(path, stop_before_pixels=True, force=True)


def tm_seconds(value: Any) -> float | None:
    """DICOM TM (``HHMMSS.FFFFFF``, also the old ``HH:MM:SS``) -> seconds of the day."""
    if value is None:
        return None
    text = str(value).strip().replace(":", "")
    if not text:
        return None
    if "T" in text or len(text.split(".")[0]) > 6:  # a DT: keep its time part
        text = text.split("+")[0].split("-")[0]
        text = text[8:] if len(text.split(".")[0]) >= 14 else text[-6:]
    m = re.match(r"^(\d{2})(\d{2})?(\d{2})?(\.\d+)?$", text)
    if not m:
        return None
    h, mi, s, frac = m.groups()
    return int(h) * 3600 + int(mi or 0) * 60 + int(s or 0) + float(frac or 0)


def time_diff(later: float, earlier: float) -> float:
    """``later - earlier`` in seconds, across midnight when that is the shorter way."""
    d = later - earlier
    if d < -12 * 3600:
        d += 24 * 3600
    elif d > 12 * 3600:
        d -= 24 * 3600
    return d


def earliest_time(times: list[float]) -> float | None:
    """The earliest of times of day, across midnight: the first (in list order) of those
    with the fewest others before them, "before" as :func:`time_diff` has it (less than
    12 h earlier, or more than 12 h later). Counted by bisection on the sorted times, so
    a 200-slice series costs 200 lookups, not 40,000 comparisons; values within a
    microsecond of a boundary (0 or 12 h apart) are compared by time_diff itself, so the
    answer is the pairwise count's to the last bit."""
    if not times:
        return None
    ordered = sorted(times)
    eps = 1e-6

    def span(lo: float, hi: float) -> tuple[int, int]:
        return bisect_left(ordered, lo), bisect_right(ordered, hi)

    def before(t: float) -> int:
        a0, a1 = span(t - 43200 - eps, t - 43200 + eps)  # about 12 h earlier: decide exactly
        b0, b1 = span(t - eps, t + eps)  # about the same time: decide exactly
        c0, c1 = span(t + 43200 - eps, t + 43200 + eps)  # about 12 h later: decide exactly
        surely = (b0 - a1) + (len(ordered) - c1)  # less than 12 h earlier; more than 12 h later
        near = [o for lo, hi in ((a0, a1), (b0, b1), (c0, c1)) for o in ordered[lo:hi] if o != t]
        return surely + sum(time_diff(o, t) < 0 for o in near)

    return min(times, key=before)


def _float(value: Any) -> float | None:
    try:
        if value is None or value == "":
            return None
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = value[0] if len(value) else None
        return None if value is None else float(value)
    except (TypeError, ValueError, IndexError):
        return None


def _strs(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value]
    return [str(value)]


def instance_time(ds: Dataset) -> tuple[float | None, str]:
    """Acquisition start of an instance and the attribute it came from.

    AcquisitionTime first (reconstructions of one acquisition share it); then
    AcquisitionDateTime, ContentTime and SeriesTime, which drift with reconstruction.
    """
    for kw in ("AcquisitionTime", "AcquisitionDateTime", "ContentTime", "SeriesTime"):
        t = tm_seconds(ds.get(kw))
        if t is not None:
            return t, kw
    return None, ""


@dataclass
class Unit:
    """One series, or one phase of a multi-phase series."""

    uid: str
    series_uid: str
    study_uid: str
    phase: int | None
    datasets: list[Dataset]
    features: dict[str, Any] = field(default_factory=dict)
    #: filled by the engine: role, reason, rule name, exam index
    role: str | None = None
    reason: str = ""
    rule: str | None = None
    pass1: str | None = None  # role of the first (context-free) pass
    timing_note: str = ""
    candidate_role: str | None = None  # role lost to a preferred series

    @property
    def ds(self) -> Dataset:
        return self.datasets[0]


# Enhanced (multi-frame) MR/CT keep acquisition parameters in functional groups, some
# under other names; EchoPulseSequence stands for ScanningSequence.
_ENHANCED_NAMES = {"EchoTime": "EffectiveEchoTime", "ScanningSequence": "EchoPulseSequence"}
_PULSE = {"GRADIENT": "GR", "SPIN": "SE", "BOTH": "GR"}


def param(ds: Dataset, keyword: str) -> Any:
    """An attribute at the top level, else in the shared (then first per-frame)
    functional groups of an enhanced multi-frame object (e.g. RepetitionTime in
    MRTimingAndRelatedParametersSequence, SliceThickness in PixelMeasuresSequence)."""
    value = ds.get(keyword)
    if value is not None and value != "":
        return value
    alt = _ENHANCED_NAMES.get(keyword, keyword)
    if alt != keyword and ds.get(alt) not in (None, ""):
        value = ds.get(alt)
        return _PULSE.get(str(value).upper(), value) if keyword == "ScanningSequence" else value
    for groups_kw in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = ds.get(groups_kw)
        if not groups:
            continue
        for elem in groups[0]:
            if elem.VR != "SQ" or not elem.value:
                continue
            item = elem.value[0]
            for kw in (keyword, alt):
                if kw in item and item.get(kw) not in (None, ""):
                    return item.get(kw)
    return None


def _instance_key(ds: Dataset) -> tuple:
    return (_float(ds.get("InstanceNumber")) or 0.0, str(ds.get("SOPInstanceUID", "")))


def _position(ds: Dataset) -> tuple | None:
    pos = ds.get("ImagePositionPatient")
    if pos is None or len(pos) != 3:
        return None
    return tuple(round(float(v), 1) for v in pos)


def _split_phases(datasets: list[Dataset]) -> list[tuple[int, list[Dataset]]] | None:
    """Split a series holding several dynamic phases, or return None.

    Phases are told apart by TemporalPositionIdentifier (Philips, Canon), else TriggerTime
    (GE multiphase), else by the order of AcquisitionTime at repeated slice positions
    (Siemens). Repeated positions from several b-values or echo times are *not* phases:
    DWI and multi-echo series stay whole.
    """
    if len(datasets) < 2:
        return None
    for kw in ("DiffusionBValue", "EchoTime"):
        if len({str(d.get(kw)) for d in datasets if d.get(kw) is not None}) > 1:
            return None
    tpis = {d.get("TemporalPositionIdentifier") for d in datasets}
    tpis.discard(None)
    if len(tpis) > 1:
        groups: dict[int, list[Dataset]] = {}
        for d in datasets:
            groups.setdefault(int(d.get("TemporalPositionIdentifier") or 0), []).append(d)
        return sorted(groups.items())
    positions = [_position(d) for d in datasets]
    distinct = set(positions)
    # one or two table positions repeated over time is a bolus-tracking monitor, not phases
    if None in distinct or len(distinct) == len(datasets) or len(distinct) < 3:
        return None
    triggers = {_float(d.get("TriggerTime")) for d in datasets}
    if len(triggers) > 1 and None not in triggers:
        order = sorted(triggers)
        groups = {}
        for d in datasets:
            groups.setdefault(order.index(_float(d.get("TriggerTime"))) + 1, []).append(d)
        return sorted(groups.items())
    by_pos: dict[tuple, list[Dataset]] = {}
    for d, p in zip(datasets, positions):
        by_pos.setdefault(p, []).append(d)
    counts = {len(v) for v in by_pos.values()}
    if len(counts) != 1 or counts == {1}:
        return None
    groups = {}
    for items in by_pos.values():
        items.sort(key=lambda d: ((instance_time(d)[0] or 0.0), _instance_key(d)))
        if len({instance_time(d)[0] for d in items}) < len(items):
            return None  # same time at one position: not distinct acquisitions
        for i, d in enumerate(items):
            groups.setdefault(i + 1, []).append(d)
    return sorted(groups.items())


def _geometry_key(ds: Dataset) -> tuple:
    """What images of one stack share: orientation, matrix, and not being a localizer."""
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    return (orientation(ds), _float(ds.get("Rows")), _float(ds.get("Columns")), "LOCALIZER" in image_type)


def split_geometry(items: list[Dataset]) -> tuple[list[Dataset], list[list[Dataset]]]:
    """(the series' main stack, the other stacks): real series carry a coronal reference
    image, a localizer or a second stack among their axial slices; each of those is a
    unit of its own, so that one stray image does not make the whole series "coronal"."""
    groups: dict[tuple, list[Dataset]] = {}
    for ds in items:
        groups.setdefault(_geometry_key(ds), []).append(ds)
    if len(groups) < 2:
        return items, []
    # the main stack: the most images, then the most distinct positions, axial first
    ranked = sorted(groups.values(), key=lambda g: (-len(g), -len({_position(d) for d in g}),
                                                    orientation(g[0]) != "axial", _instance_key(g[0])))
    return ranked[0], ranked[1:]


def build_units(headers: Iterable[Dataset]) -> list[Unit]:
    """Group headers into units: one per stack of a series (strays split off), and one
    per phase of a multi-phase stack. An Enhanced multi-frame instance takes part as its
    frames (:func:`mvi_node.common.frames.frame_datasets`), so its phases and stacks
    become units as a classic series' do."""
    series: dict[str, list[Dataset]] = {}
    for header in headers:
        for ds in frame_datasets(header):
            series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    units = []
    for series_uid, items in series.items():
        items.sort(key=_instance_key)
        study_uid = str(items[0].get("StudyInstanceUID", ""))
        items, strays = split_geometry(items)
        for k, group in enumerate(strays, 1):
            # own units, "<series>~k": selection judges them apart (mostly role "other")
            units.append(Unit(f"{series_uid}~{k}", series_uid, study_uid, None, group))
        phases = _split_phases(items)
        if phases:
            for phase, group in phases:
                units.append(Unit(f"{series_uid}#{phase}", series_uid, study_uid, phase, group))
        else:
            units.append(Unit(series_uid, series_uid, study_uid, None, items))
    for unit in units:
        unit.features = unit_features(unit.datasets)
    _trigger_offsets([u for u in units if u.phase is not None])
    return units


def _trigger_offsets(phases: list[Unit]) -> None:
    """GE multiphase: phases share AcquisitionTime and differ by TriggerTime (ms).

    Their time is then AcquisitionTime + TriggerTime, so the timeline can order them.
    """
    by_series: dict[str, list[Unit]] = {}
    for u in phases:
        by_series.setdefault(u.series_uid, []).append(u)
    for group in by_series.values():
        acq = {u.features["acquisition_seconds"] for u in group}
        trig = [u.features["trigger_time_ms"] for u in group]
        if len(acq) != 1 or None in acq:
            continue
        if None not in trig and len(set(trig)) == len(group):
            for u in group:
                u.features["acquisition_seconds"] += u.features["trigger_time_ms"] / 1000.0
                u.features["time_source"] = "AcquisitionTime+TriggerTime"
        else:
            # one time for every phase: their order is known, their spacing is not
            for u in group:
                u.features["acquisition_seconds"] = None
                u.features["time_source"] = "phases share one acquisition time"


def orientation(ds: Dataset) -> str:
    """axial / coronal / sagittal / oblique / unknown from ImageOrientationPatient.

    Axial means the slice normal lies within ~30 degrees of the patient z axis.
    """
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        iop = _functional_group_iop(ds)
    if iop is None:
        return "unknown"
    r, c = [float(v) for v in iop[:3]], [float(v) for v in iop[3:]]
    n = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    axis = max(range(3), key=lambda i: abs(n[i]))
    if abs(n[axis]) < 0.866:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _functional_group_iop(ds: Dataset):
    # Enhanced CT/MR multi-frame: PlaneOrientationSequence in the shared groups.
    try:
        return ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    except (AttributeError, IndexError, KeyError):
        return None


def agent_class(text: str) -> str:
    """hepatobiliary / extracellular / none / unknown / other from an agent name."""
    if not text.strip():
        return "unknown"
    if _NO_AGENT_RE.match(text):
        return "none"
    if HEPATOBILIARY_AGENT_RE.search(text):
        return "hepatobiliary"
    if EXTRACELLULAR_AGENT_RE.search(text):
        return "extracellular"
    return "other"


def agent_text(ds: Dataset) -> str:
    """ContrastBolusAgent plus the code meanings of ContrastBolusAgentSequence."""
    parts = [str(ds.get("ContrastBolusAgent", "") or "")]
    for item in ds.get("ContrastBolusAgentSequence", []) or []:
        parts.append(str(item.get("CodeMeaning", "") or ""))
    return " ".join(p for p in parts if p.strip())


_T1_GRE_NAME = re.compile(r"fl3d|vibe|lava|thrive|tfe3d|t1ffe|quick ?3d|disco|twist|star[- ]?vibe|fame|radial vibe", re.I)


def mr_sequence(ds: Dataset, b_max: float | None) -> str:
    """Coarse MR weighting from acquisition parameters (not from the description).

    adc: ImageType ADC; dwi: a b-value > 0 (DiffusionBValue, vendor private, Siemens
    SequenceName), ImageType DIFFUSION/TRACE, or spin-echo EPI (ScanningSequence EP) with
    TE >= 40 ms; t2: TE >= 60 ms; t1_gre: gradient echo (ScanningSequence GR) with
    TR < 15 ms and TE < 5 ms (VIBE/LAVA/THRIVE dynamics), or without TR/TE a 3D GR
    (MRAcquisitionType) or a 3D T1 SequenceName (fl3d, LAVA, THRIVE, Quick3D...);
    t1_2d: gradient echo with TR < 400 ms and TE < 10 ms (in/opposed-phase).
    """
    itype = " ".join(_strs(ds.get("ImageType"))).upper()
    if re.search(r"\bADC\b|APPARENT", itype):
        return "adc"
    if (b_max or 0) > 0 or re.search(r"DIFFUSION|TRACE", itype):
        return "dwi"
    tr, te = _float(param(ds, "RepetitionTime")), _float(param(ds, "EchoTime"))
    seq = " ".join(_strs(param(ds, "ScanningSequence"))).upper().split()
    if "EP" in seq and "GR" not in seq and te is not None and te >= 40:
        return "dwi"
    if te is not None and te >= 60:
        return "t2"
    gre = "GR" in seq or (tr is not None and tr < 15 and "SE" not in seq)
    if gre and tr is not None and te is not None:
        if tr < 15 and te < 5:
            return "t1_gre"
        if tr < 400 and te < 10:
            return "t1_2d"
    if tr is None or te is None:
        three_d = str(ds.get("MRAcquisitionType", "") or "").upper() == "3D"
        if (three_d and "GR" in seq) or _T1_GRE_NAME.search(str(ds.get("SequenceName", "") or "")):
            return "t1_gre"
    return "unknown"


def _fat_sat(ds: Dataset) -> bool | None:
    """Fat suppression from ScanOptions (FS, SFS, SPAIR, CHESS, FAT_SAT...) or ImageType;
    Enhanced MR: SpectrallySelectedSuppression (0018,9025) FAT, FAT_AND_WATER, SILICON_AND_FAT."""
    if "FAT" in str(param(ds, "SpectrallySelectedSuppression") or "").upper():
        return True
    opts = " ".join(_strs(ds.get("ScanOptions")) + _strs(ds.get("ImageType"))).upper()
    if not opts.strip():
        return None
    return bool(re.search(r"\b(FS|SFS|SPAIR|SPIR|CHESS|FAT[_ ]?SAT|FSAT|FATSAT|WATER|W)\b|FAT_SAT", opts))


def unit_features(datasets: list[Dataset]) -> dict[str, Any]:
    """Values computed from all instances of a unit; rules read them with ``feature =``."""
    ds = datasets[0]
    sop_class = str(ds.get("SOPClassUID", "") or "")
    sop_name = UID(sop_class).name if sop_class else ""
    frames = sum(int(_float(d.get("NumberOfFrames")) or 1) for d in datasets)
    positions = {p for p in (_position(d) for d in datasets) if p is not None}
    is_image = "PixelData" in ds or "Rows" in ds
    is_image = is_image and not any(h in sop_name for h in _NON_IMAGE_HINTS)
    times = [(instance_time(d)) for d in datasets]
    valid = [t for t, _ in times if t is not None]
    acq = earliest_time(valid)
    trig = _float(ds.get("TriggerTime"))
    # GE multiphase: all phases share AcquisitionTime; TriggerTime (ms) is the offset
    features: dict[str, Any] = {
        "sop_class": sop_name or sop_class,
        "is_image": is_image,
        "instances": len(datasets),
        "frames": frames,
        "distinct_positions": len(positions),
        "orientation": orientation(ds) if is_image else "none",
        "slice_thickness": _float(param(ds, "SliceThickness")),
        "acquisition_seconds": acq,
        "time_source": next((src for t, src in times if t is not None), ""),
        "trigger_time_ms": trig,
    }
    if len(positions) > 1:
        # extent along the slice normal approximated by the largest coordinate spread
        spans = [max(p[i] for p in positions) - min(p[i] for p in positions) for i in range(3)]
        features["coverage_mm"] = round(max(spans) + (features["slice_thickness"] or 0.0), 1)
    else:
        features["coverage_mm"] = features["slice_thickness"] or 0.0
    if "ContentSequence" in ds:
        features["sr_roi"] = _has_coordinates(ds.ContentSequence)
    bolus = None
    for d in datasets[:1] + datasets[-1:]:
        bolus = bolus if bolus is not None else tm_seconds(d.get("ContrastBolusStartTime"))
    features["bolus_start_seconds"] = bolus
    text = agent_text(ds)
    features["agent_text"] = text
    features["agent_class"] = agent_class(text)
    if str(ds.get("Modality", "")) == "MR":
        found = [b_value(d, param) for d in datasets]
        bvals = [b for b, _src in found if b is not None]
        features["b_value_max"] = max(bvals) if bvals else None
        features["b_value_source"] = next((src for b, src in found if b is not None), "")
        features["mr_sequence"] = mr_sequence(ds, features["b_value_max"])
        features["fat_sat"] = _fat_sat(ds)
        features["repetition_time"] = _float(param(ds, "RepetitionTime"))
        features["echo_time"] = _float(param(ds, "EchoTime"))
        features["flip_angle"] = _float(param(ds, "FlipAngle"))
        features.update(kind_features(datasets))  # Dixon / subtraction (mr_headers)
    return features


def _has_coordinates(items, depth: int = 0) -> bool:
    """True when an SR content tree holds SCOORD/SCOORD3D items (a planar ROI)."""
    if depth > 8:
        return False
    for item in items:
        if str(item.get("ValueType", "")) in ("SCOORD", "SCOORD3D"):
            return True
        if "ContentSequence" in item and _has_coordinates(item.ContentSequence, depth + 1):
            return True
    return False
