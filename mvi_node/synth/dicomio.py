"""Turn rendered arrays into DICOM files with the modules a PACS and a selector read.

UIDs are derived from the exam key and fixed dates/times are used, so a seed always
produces the same bytes. Each series' shared attributes are encoded once and only the
per-instance elements are encoded per file (pydicom's ``save_as`` per image was ~80% of
the generation time), which keeps writing a 200-image exam well under a second.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr, write_data_element
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from mvi_node.synth.spec import ExamSpec
from mvi_node.synth.vendors import VENDOR_PROFILES


IMPLEMENTATION_VERSION = f"PYDICOM {pydicom.__version__}"[:16]


def derive_uid(*parts: Any) -> str:
    """Deterministic 2.25 UID from ``parts``."""
    return generate_uid(prefix="2.25.", entropy_srcs=["|".join(str(p) for p in parts)])


def tm(t: dt.datetime) -> str:
    return t.strftime("%H%M%S") + (f".{t.microsecond:06d}".rstrip("0").rstrip(".") if t.microsecond else "")


def da(t: dt.datetime) -> str:
    return t.strftime("%Y%m%d")


@dataclass
class SeriesPlan:
    """One series to write; ``images`` hold stored pixel values (n, rows, cols)."""

    name: str  # stable key inside the exam (UID derivation, manifest notes)
    role: str
    description: str
    number: int
    sop_class: str
    images: np.ndarray
    positions: list[list[float]]
    orientation: list[float]
    pixel_spacing: tuple[float, float]
    thickness: float
    image_type: tuple[str, ...]
    series_time: dt.datetime
    acq_times: list[dt.datetime]
    study: int = 0
    tags: dict[str, Any] = field(default_factory=dict)
    per_instance: list[dict[str, Any]] | None = None
    pixel: dict[str, Any] = field(default_factory=dict)  # Bits*, PixelRepresentation
    note: dict[str, Any] = field(default_factory=dict)
    uid: str = ""
    plane: bool = True  # False: no Image Plane / Frame of Reference (secondary capture)


@dataclass
class ExamContext:
    spec: ExamSpec
    out: Path
    study_date: dt.datetime
    study_uids: list[str]
    study_times: list[dt.datetime]
    frame_uid: str
    charset: str | None
    patient: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def series_dir(self, number: int) -> Path:
        return self.out / "dicom" / self.spec.patient_id / self.spec.accession / f"S{number:04d}"


def exam_start(spec: ExamSpec) -> dt.datetime:
    """Fixed, seed-derived date and time the exam starts."""
    day = dt.datetime(2025, 1, 6) + dt.timedelta(days=(spec.index * 3 + spec.seed) % 330)
    return day.replace(hour=8) + dt.timedelta(minutes=(spec.index * 23 + spec.seed * 7) % 540)


def make_context(spec: ExamSpec, out: Path, study_times: list[dt.datetime], patient: dict[str, Any],
                 non_ascii: bool) -> ExamContext:
    start = exam_start(spec)
    n_studies = len(study_times)
    uids = [derive_uid(spec.key(), "study", k) for k in range(n_studies)]
    return ExamContext(
        spec=spec, out=Path(out), study_date=start, study_uids=uids,
        study_times=study_times,
        frame_uid=derive_uid(spec.key(), "frame"), charset="ISO_IR 192" if non_ascii else None,
        patient=patient,
    )


def base_dataset(ctx: ExamContext, plan: SeriesPlan) -> Dataset:
    """Patient, Study, Series, Frame of Reference, Equipment, SOP Common attributes."""
    spec = ctx.spec
    vendor = VENDOR_PROFILES[spec.vendor]
    ds = Dataset()
    if ctx.charset:
        ds.SpecificCharacterSet = ctx.charset
    ds.SOPClassUID = plan.sop_class
    ds.StudyDate = da(ctx.study_date)
    ds.SeriesDate = da(ctx.study_date)
    ds.AcquisitionDate = da(ctx.study_date)
    ds.ContentDate = da(ctx.study_date)
    ds.StudyTime = tm(ctx.study_times[plan.study])
    ds.SeriesTime = tm(plan.series_time)
    ds.AccessionNumber = spec.accession
    ds.Modality = "MR" if spec.modality == "mr" else "CT"
    ds.Manufacturer = vendor.manufacturer
    ds.InstitutionName = "SYNTHETIC HOSPITAL"
    ds.ReferringPhysicianName = "SYNTH^REFERRER"
    ds.StationName = f"{spec.vendor.upper()}{spec.modality.upper()}01"
    ds.StudyDescription = "LIVER MULTIPHASE" if spec.modality == "ct" else "MR LIVER"
    ds.SeriesDescription = plan.description
    ds.ManufacturerModelName = (vendor.mr_model[spec.field_strength] if spec.modality == "mr" else vendor.ct_model)
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    for k, v in ctx.patient.items():
        setattr(ds, k, v)
    ds.DeviceSerialNumber = "SYN0001"
    ds.SoftwareVersions = vendor.software
    ds.ProtocolName = plan.tags.pop("ProtocolName", "LIVER")
    ds.PatientPosition = "FFS" if spec.modality == "ct" else "HFS"
    ds.StudyInstanceUID = ctx.study_uids[plan.study]
    ds.SeriesInstanceUID = plan.uid
    ds.StudyID = str(plan.study + 1)
    ds.SeriesNumber = plan.number
    ds.FrameOfReferenceUID = ctx.frame_uid
    ds.PositionReferenceIndicator = ""
    return ds


def write_series(ctx: ExamContext, plan: SeriesPlan) -> list[Path]:
    """Write ``plan`` as single-frame images; returns the file paths."""
    spec = ctx.spec
    plan.uid = plan.uid or derive_uid(spec.key(), "series", plan.name)
    ds = base_dataset(ctx, plan)
    ds.ImageType = list(plan.image_type)
    if plan.plane:
        ds.ImageOrientationPatient = [float(v) for v in plan.orientation]
        ds.PixelSpacing = [round(float(plan.pixel_spacing[0]), 6), round(float(plan.pixel_spacing[1]), 6)]
        ds.SliceThickness = round(float(plan.thickness), 4)
    else:
        del ds.FrameOfReferenceUID, ds.PositionReferenceIndicator
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    n, rows, cols = plan.images.shape
    ds.Rows, ds.Columns = rows, cols
    px = {"BitsAllocated": 16, "BitsStored": 16, "HighBit": 15, "PixelRepresentation": 0, **plan.pixel}
    for k, v in px.items():
        setattr(ds, k, v)
    for k, v in plan.tags.items():
        if v is not None:
            setattr(ds, k, v)
    out_dir = ctx.series_dir(plan.number)
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = np.int16 if px["PixelRepresentation"] else np.uint16
    correct_ambiguous_vr(ds, True)
    encodings = convert_encodings(ds.get("SpecificCharacterSet") or "ISO_IR 6")
    static = {e.tag: _encode(e, encodings) for e in ds}
    axial = list(plan.orientation[:6]) == [1, 0, 0, 0, 1, 0]
    paths = []
    for i in range(n):
        sop = derive_uid(plan.uid, i)
        dyn = Dataset()
        dyn.SOPInstanceUID = sop
        dyn.InstanceNumber = i + 1
        if plan.plane:
            dyn.ImagePositionPatient = [round(float(v), 4) for v in plan.positions[i]]
            if axial:
                dyn.SliceLocation = round(float(plan.positions[i][2]), 4)
        dyn.AcquisitionTime = tm(plan.acq_times[i])
        dyn.ContentTime = tm(plan.acq_times[i])
        for k, v in (plan.per_instance[i] if plan.per_instance else {}).items():
            setattr(dyn, k, v)
        elems = dict(static)
        elems.update({e.tag: _encode(e, encodings) for e in dyn})
        pixels = np.ascontiguousarray(plan.images[i], dtype=dtype).tobytes()
        elems[Tag(0x7FE00010)] = _encode(DataElement(0x7FE00010, "OW", pixels), encodings)
        path = out_dir / f"I{i + 1:04d}.dcm"
        path.write_bytes(_file_meta(plan.sop_class, sop) + b"".join(elems[t] for t in sorted(elems)))
        paths.append(path)
    return paths


def _encode(elem: DataElement, encodings: list[str]) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_data_element(fp, elem, encodings)
    return fp.getvalue()


def _file_meta(sop_class: str, sop_instance: str) -> bytes:
    """Preamble, DICM and the group 2 elements (Explicit VR Little Endian)."""
    items = [
        DataElement(0x00020001, "OB", b"\x00\x01"),
        DataElement(0x00020002, "UI", sop_class),
        DataElement(0x00020003, "UI", sop_instance),
        DataElement(0x00020010, "UI", ExplicitVRLittleEndian),
        DataElement(0x00020012, "UI", PYDICOM_IMPLEMENTATION_UID),
        DataElement(0x00020013, "SH", IMPLEMENTATION_VERSION),
    ]
    body = b"".join(_encode(e, ["iso8859"]) for e in items)
    return b"\x00" * 128 + b"DICM" + _encode(DataElement(0x00020000, "UL", len(body)), ["iso8859"]) + body


def to_stored(values: np.ndarray, slope: float, intercept: float, signed: bool, bits: int) -> np.ndarray:
    """Real-world values -> stored integers within ``bits`` (clipped)."""
    raw = np.rint((values - intercept) / slope)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return np.clip(raw, lo, hi).astype(np.int16 if signed else np.uint16)


def pin_dataset(ds: Dataset, key: str, when: dt.datetime) -> None:
    """Overwrite the wall-clock dates and random UIDs libraries insert (determinism)."""
    for kw in ("InstanceCreationDate", "ContentDate", "PresentationCreationDate", "SeriesDate"):
        if kw in ds:
            setattr(ds, kw, da(when))
    for kw in ("InstanceCreationTime", "ContentTime", "PresentationCreationTime", "SeriesTime"):
        if kw in ds:
            setattr(ds, kw, tm(when))
    mapping: dict[str, str] = {}

    def walk(d: Dataset) -> None:
        for elem in d:
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item)
            elif elem.keyword == "ContributionDateTime":
                elem.value = da(when) + tm(when).split(".")[0]
            elif elem.keyword == "DimensionOrganizationUID":
                elem.value = mapping.setdefault(str(elem.value), derive_uid(key, "dimorg", len(mapping)))

    walk(ds)
