"""Frames of Enhanced (multi-frame) CT/MR images as classic single-frame headers.

The one place of the node that knows multi-frame functional groups (PS3.3 C.7.6.16).
An Enhanced CT/MR Image (or a Legacy Converted Enhanced one) keeps what a classic image
has at its top level in functional group items: shared by every frame
(SharedFunctionalGroupsSequence) or given per frame (PerFrameFunctionalGroupsSequence,
which wins). :func:`frame_datasets` turns such an instance into one *frame view* per
frame, a pydicom Dataset that reads like a classic header:

- ImagePositionPatient / ImageOrientationPatient / PixelSpacing / SliceThickness from
  Plane Position (Patient), Plane Orientation (Patient) and Pixel Measures
  (C.7.6.16.2.1-3); RescaleSlope/Intercept/Type from Pixel Value Transformation
  (C.7.6.16.2.9), WindowCenter/Width from Frame VOI LUT (C.7.6.16.2.10);
- EchoTime from MR Echo EffectiveEchoTime, RepetitionTime/FlipAngle from MR Timing and
  Related Parameters, DiffusionBValue from MR Diffusion, InversionTime from MR Modifier
  InversionTimes, TriggerTime from Cardiac Synchronization NominalCardiacTriggerDelayTime
  (C.8.13.5); KVP, XRayTubeCurrent, ExposureTime, ConvolutionKernel... from the CT groups
  (C.8.15.3); every other plain attribute of a group item (Legacy Converted's
  Unassigned Converted Attributes included) as it stands;
- TemporalPositionIdentifier from Frame Content TemporalPositionIndex, StackID and
  InStackPositionNumber as they are, AcquisitionNumber from FrameAcquisitionNumber,
  AcquisitionDateTime/AcquisitionDate/AcquisitionTime from FrameAcquisitionDateTime
  (C.7.6.16.2.2), else the instance's AcquisitionDateTime;
- ImageType from the frame's FrameType (MR/CT Image Frame Type);
- ScanningSequence (GR/SE, plus EP for echo-planar) from EchoPulseSequence and
  EchoPlanarPulseSequence, SequenceName from PulseSequenceName, ScanOptions "FS" from
  SpectrallySelectedSuppression FAT (MR Pulse Sequence, C.8.13.4), ContrastBolusStartTime
  and ContrastBolusVolume from the Enhanced Contrast/Bolus module's administration profile
  (C.7.6.4b): the classic names selection reads.

A view keeps the parent's SOPInstanceUID, SOPClassUID, ``filename`` and ``file_meta``,
has no NumberOfFrames and no functional groups (the parent's other elements are shared,
not copied: treat views as read-only), and carries two plain Python
attributes: ``frame_number`` (1-based, the ReferencedFrameNumber of PS3.3 C.7.6.1.1.3
that results must cite) and ``frame_parent`` (the instance's header). Read them with
:func:`frame_number` / :func:`frame_parent`; key images by :func:`image_key`, never by
SOP Instance UID alone. A classic image (or any other object: SEG, SR...) comes back
unchanged as a one-element list.

:func:`frame_pixels` reads one frame's stored values (a view's, or a classic image's
whole pixel array); the decoded pixels of the last few multi-frame files are kept, so
reading a series frame by frame decodes its file once.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.valuerep import DS

#: SOP classes whose frames become views (Enhanced and Legacy Converted Enhanced CT/MR)
ENHANCED_IMAGE_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.2.1",    # Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.2",    # Legacy Converted Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.4.1",    # Enhanced MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.3",    # Enhanced MR Color Image Storage
    "1.2.840.10008.5.1.4.1.1.4.4",    # Legacy Converted Enhanced MR Image Storage
})

_GROUPS = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")
# attributes of the instance a frame view must not inherit
_INSTANCE_ONLY = (*_GROUPS, "NumberOfFrames", "PixelData", "FloatPixelData", "DoubleFloatPixelData",
                  "DimensionIndexValues", "ConversionSourceAttributesSequence")
# functional-group names -> classic names
_RENAME = {
    "EffectiveEchoTime": "EchoTime",
    "TemporalPositionIndex": "TemporalPositionIdentifier",
    "NominalCardiacTriggerDelayTime": "TriggerTime",
    "FrameAcquisitionNumber": "AcquisitionNumber",
    "FrameType": "ImageType",
    "XRayTubeCurrentInmA": "XRayTubeCurrent",
    "ExposureTimeInms": "ExposureTime",
    "ExposureInmAs": "Exposure",
}
# group items whose plain attributes describe something else than the frame's image
_NOT_THE_FRAME = {"DerivationImageSequence", "ReferencedImageSequence", "FrameDisplayShutterSequence",
                  "RealWorldValueMappingSequence", "ConversionSourceAttributesSequence"}
_PULSE = {"GRADIENT": "GR", "SPIN": "SE", "BOTH": "SE\\GR"}


def is_enhanced(ds: Dataset) -> bool:
    """An Enhanced / Legacy Converted Enhanced CT or MR instance with functional groups."""
    return (str(ds.get("SOPClassUID", "") or "") in ENHANCED_IMAGE_CLASSES
            and bool(ds.get("PerFrameFunctionalGroupsSequence") or ds.get("SharedFunctionalGroupsSequence")))


def frame_number(ds: Dataset) -> int | None:
    """1-based frame of a frame view (ReferencedFrameNumber); None for a classic image."""
    return getattr(ds, "frame_number", None)


def frame_parent(ds: Dataset) -> Dataset:
    """The multi-frame header a frame view came from (a classic image: itself)."""
    return getattr(ds, "frame_parent", None) or ds


def image_key(sop_uid: Any, frame: int | None = None) -> str:
    """Key of one image: the SOP Instance UID, with ``#<frame>`` for a frame of a
    multi-frame instance (UIDs hold digits and dots only, so it cannot clash)."""
    return f"{sop_uid}#{int(frame)}" if frame is not None else str(sop_uid)


def view_key(ds: Dataset) -> str:
    """:func:`image_key` of a dataset (classic image or frame view)."""
    return image_key(ds.SOPInstanceUID, frame_number(ds))


def lookup(index: dict[str, Any], sop_uid: Any, frame: int | None = None) -> Any:
    """An entry of a dict keyed by :func:`image_key` for a reference (SOP, frame):
    the frame view, else the classic image (a classic image cited as frame 1 too)."""
    if frame is not None:
        hit = index.get(image_key(sop_uid, frame))
        if hit is not None or int(frame) != 1:
            return hit
    return index.get(str(sop_uid))


def frame_datasets(ds: Dataset) -> list[Dataset]:
    """One classic-looking view per frame of an Enhanced CT/MR instance (PS3.3 C.7.6.16),
    in frame order; any other dataset as ``[ds]``."""
    if not is_enhanced(ds):
        return [ds]
    shared_groups = ds.get("SharedFunctionalGroupsSequence") or [Dataset()]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    n = int(ds.get("NumberOfFrames") or len(per_frame) or 1)
    base = {elem.tag: elem for elem in ds if elem.keyword not in _INSTANCE_ONLY}
    for kw, value in _pulse_names(ds).items():
        elem = DataElement(tag_for_keyword(kw), dictionary_VR(tag_for_keyword(kw)), value)
        base[elem.tag] = elem
    base.update({elem.tag: elem for elem in _flatten(shared_groups[0]).values()})
    views = []
    for k in range(n):
        # the parent's and the groups' elements are shared, not copied (views are read-only):
        # thousands of frames stay cheap
        view = Dataset(dict(base))
        view.file_meta = getattr(ds, "file_meta", Dataset())
        if k < len(per_frame):
            for elem in _flatten(per_frame[k]).values():
                view.add(elem)
        _frame_times(view)
        times = view.get("InversionTimes")  # FD, one value or several
        if times is not None and times != "":
            first = times[0] if isinstance(times, (list, tuple, MultiValue)) else times
            view.InversionTime = DS(float(first), auto_format=True)
        view.filename = getattr(ds, "filename", None)
        view.frame_number = k + 1
        view.frame_parent = ds
        views.append(view)
    return views


def _flatten(group_item: Dataset) -> dict[str, DataElement]:
    """Plain attributes of a functional group item's macros, under their classic names."""
    out: dict[str, DataElement] = {}
    for macro in group_item:
        if macro.VR != "SQ" or not macro.value or macro.keyword in _NOT_THE_FRAME:
            continue
        for elem in macro.value[0]:
            if elem.VR == "SQ" or not elem.keyword:
                continue
            keyword = _RENAME.get(elem.keyword, elem.keyword)
            if keyword == "ImageType":
                elem = DataElement(0x00080008, "CS", elem.value)
            elif keyword != elem.keyword:
                tag = tag_for_keyword(keyword)
                vr = dictionary_VR(tag)
                value = elem.value
                if value is not None and value != "" and vr == "DS":  # FD -> the classic string VR
                    value = DS(float(value), auto_format=True)
                elif value is not None and value != "" and vr == "IS":
                    value = int(value)
                elem = DataElement(tag, vr, value)
            out[keyword] = elem
    return out


def _pulse_names(ds: Dataset) -> dict[str, Any]:
    """Classic ScanningSequence / SequenceName / ScanOptions from MR Pulse Sequence."""
    out: dict[str, Any] = {}
    echo = str(ds.get("EchoPulseSequence", "") or "").upper()
    if echo and "ScanningSequence" not in ds:
        seq = _PULSE.get(echo, "GR")
        if str(ds.get("EchoPlanarPulseSequence", "") or "").upper() == "YES":
            seq = "SE\\EP" if echo == "SPIN" else f"{seq}\\EP"
        out["ScanningSequence"] = seq.split("\\") if "\\" in seq else seq
    if "SequenceName" not in ds and ds.get("PulseSequenceName"):
        out["SequenceName"] = str(ds.PulseSequenceName)
    suppression = str(ds.get("SpectrallySelectedSuppression", "") or "").upper()
    if "ScanOptions" not in ds and suppression:
        out["ScanOptions"] = "FS" if "FAT" in suppression else ""
    out.update(_contrast_names(ds))
    return out


def _contrast_names(ds: Dataset) -> dict[str, Any]:
    """Classic ContrastBolusStartTime / ContrastBolusVolume from the first agent's
    administration profile in the Enhanced Contrast/Bolus module (C.7.6.4b); the agent
    itself stays named by ContrastBolusAgentSequence's code meaning, as classic readers
    read it too."""
    agents = ds.get("ContrastBolusAgentSequence") or []
    if not agents:
        return {}
    agent, out = agents[0], {}
    profiles = agent.get("ContrastAdministrationProfileSequence") or []
    profile = profiles[0] if profiles else Dataset()
    for kw in ("ContrastBolusStartTime", "ContrastBolusVolume"):
        value = profile.get(kw, agent.get(kw))
        if kw not in ds and value not in (None, ""):
            out[kw] = value
    return out


def _frame_times(view: Dataset) -> None:
    """AcquisitionDateTime/Date/Time of the frame from its FrameAcquisitionDateTime, else
    the instance's AcquisitionDateTime (classic selection reads AcquisitionTime)."""
    value = view.get("FrameAcquisitionDateTime") or view.get("AcquisitionDateTime")
    text = str(value or "").strip()
    if len(text) < 8:
        return
    view.AcquisitionDateTime = text
    view.AcquisitionDate = text[:8]
    time = text[8:].split("+")[0].split("-")[0]
    if time:
        view.AcquisitionTime = time


# --- pixels -----------------------------------------------------------------------------

_CACHE_FILES = 2  # multi-frame files whose decoded frames are kept (a series and its twin)
_cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
_lock = threading.Lock()


def frame_pixels(ds: Dataset) -> np.ndarray:
    """Stored pixel values (rows, cols) of one image: a frame view's frame of its file,
    or a classic image's pixel_array (from ``ds`` when it holds PixelData, else read from
    ``ds.filename``). Any transfer syntax pydicom decodes. A frame is a read-only view into
    the decoded file, kept for the next frames: copy it (``astype``) before changing it."""
    frame = frame_number(ds)
    if frame is None:
        if "PixelData" in ds:
            return ds.pixel_array
        return dcmread(ds.filename).pixel_array
    parent = frame_parent(ds)
    if "PixelData" in parent:
        frames = parent.pixel_array
    else:
        frames = _decoded(str(ds.filename))
    return frames[frame - 1] if frames.ndim > 2 else frames


def _decoded(path: str) -> np.ndarray:
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    frames = dcmread(path).pixel_array
    frames.setflags(write=False)  # shared by every caller
    with _lock:
        _cache[key] = frames
        while len(_cache) > _CACHE_FILES:
            _cache.popitem(last=False)
    return frames


# --- segmentations of frame views ---------------------------------------------------------

def seg_source_arguments(images: list[Dataset], pixel_array: np.ndarray) -> dict[str, Any]:
    """Keyword arguments of ``highdicom.seg.Segmentation`` for a mask over ``images``
    (classic images, or frame views of Enhanced instances; mask plane k on image k).

    highdicom takes a multi-frame source only whole and only one, and refuses one whose
    frames repeat a position (phases, b-values): frame views are given as their (first)
    instance plus the planes' own positions, and :func:`cite_source_frames` then names
    per SEG frame the (SOP, frame) it was drawn on."""
    if all(frame_number(d) is None for d in images):
        return {"source_images": list(images), "pixel_array": pixel_array}
    if any(frame_number(d) is None for d in images):
        raise ValueError("a SEG over classic images and frames of an Enhanced instance at once is not supported")
    import highdicom as hd

    first = images[0]
    return {
        "source_images": [frame_parent(first)],
        "pixel_array": pixel_array,
        "plane_positions": [hd.PlanePositionSequence("PATIENT", [float(v) for v in d.ImagePositionPatient])
                            for d in images],
        "plane_orientation": hd.PlaneOrientationSequence("PATIENT",
                                                         [float(v) for v in first.ImageOrientationPatient]),
        "pixel_measures": hd.PixelMeasuresSequence([float(v) for v in first.PixelSpacing],
                                                   float(first.get("SliceThickness") or 1.0),
                                                   first.get("SpacingBetweenSlices")),
    }


def _code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def cite_source_frames(seg: Dataset, images: list[Dataset]) -> None:
    """A SEG over frame views (built with :func:`seg_source_arguments`) cites its sources:
    each SEG frame's Derivation Image Sequence (PS3.3 C.7.6.16.2.6) names the frame view at
    its position as (SOP, ReferencedFrameNumber), and the Referenced Series Sequence
    (C.8.20.2) lists every instance those frames belong to. Classic sources: unchanged."""
    if not any(frame_number(d) is not None for d in images):
        return
    at = {tuple(round(float(v), 3) for v in d.ImagePositionPatient): d for d in images}
    for fg in seg.get("PerFrameFunctionalGroupsSequence", []):
        view = at.get(tuple(round(float(v), 3) for v in fg.PlanePositionSequence[0].ImagePositionPatient))
        if view is None:
            continue
        src = Dataset()
        src.ReferencedSOPClassUID, src.ReferencedSOPInstanceUID = view.SOPClassUID, view.SOPInstanceUID
        src.ReferencedFrameNumber = frame_number(view)
        src.PurposeOfReferenceCodeSequence = [_code_item("121322", "Source image for image processing operation")]
        src.SpatialLocationsPreserved = "YES"
        der = Dataset()
        der.DerivationCodeSequence = [_code_item("113076", "Segmentation")]
        der.SourceImageSequence = [src]
        fg.DerivationImageSequence = [der]
    instances: dict[str, dict[str, str]] = {}
    for d in images:
        instances.setdefault(str(d.SeriesInstanceUID), {})[str(d.SOPInstanceUID)] = str(d.SOPClassUID)
    for series in seg.get("ReferencedSeriesSequence", []):
        cited = instances.get(str(series.SeriesInstanceUID))
        if not cited:
            continue
        items = []
        for sop, cls in cited.items():
            ref = Dataset()
            ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = cls, sop
            items.append(ref)
        series.ReferencedInstanceSequence = items
