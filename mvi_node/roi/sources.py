"""The four annotation sources, tried in order; the first that yields a tumour wins.

1. DICOM SEG (PS3.3 A.51) read with highdicom ``segread``: the segment whose label,
   property type or category says tumour/lesion/neoplasm (or the only segment, unless it
   is an organ). An organ segment is never the tumour: a liver segment becomes the ROI's
   liver mask; an exam whose only outline is an organ has no tumour ROI, and says so.
2. RT Structure Set (PS3.3 A.19): a CLOSED_PLANAR contour of a ROI named or
   interpreted as tumour/GTV; contour points are patient coordinates.
3. TID 1500 Measurement Report (PS3.16): SCOORD planar ROIs (on a referenced image) or
   SCOORD3D (patient coordinates).
4. Grayscale Softcopy Presentation State (PS3.3 A.33): CIRCLE / ELLIPSE / closed
   POLYLINE graphics in PIXEL units on referenced images.

Anything drawn on another series of the same frame of reference is brought onto the
target through patient coordinates (geometry.planes_to_series / world_to_index).
"""

from __future__ import annotations

import logging
import re
from typing import Iterable, Protocol

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from mvi_node.common.frames import lookup
from mvi_node.roi.geometry import (PlaneMask, SeriesGeometry, plane_of, planes_to_series, shape_mask,
                                   world_to_index)
from mvi_node.roi.model import Roi

log = logging.getLogger(__name__)

TUMOUR_RE = re.compile(r"tum(o|ou)r|lesion|neoplasm|hcc|gtv|mass|nodule|carcinoma|läsion|tumeur|tumor|肿瘤|腫瘍", re.I)
NEOPLASM_CODES = {"108369006", "86049000", "25370001", "52988006"}  # SCT neoplasm, malignant, HCC, lesion
#: SCT 49755003 Morphologically abnormal structure: the category of lesions (CID 7150)
LESION_CATEGORIES = {"49755003"}
#: SCT 123037004 / 91723000 Anatomical structure, the category of organs (CID 7150)
ANATOMY_CATEGORIES = {"123037004", "91723000"}
LIVER_CODES = {"10200004"}  # SCT Liver
ORGAN_RE = re.compile(r"liver|leber|foie|h[ií]gado|fegato|organ|肝", re.I)
LIVER_RE = re.compile(r"liver|leber|foie|h[ií]gado|fegato|肝", re.I)


def _full(ds: Dataset) -> Dataset:
    """Headers from selection are read without pixels; annotation objects need everything."""
    if "PixelData" in ds or not getattr(ds, "filename", None):
        return ds
    return pydicom.dcmread(ds.filename)


def _is_tumour(label: str, codes: Iterable[str] = ()) -> bool:
    return bool(TUMOUR_RE.search(label or "")) or bool(NEOPLASM_CODES & set(codes))


def segment_kind(segment: Dataset) -> str:
    """"tumour", "liver", "organ" or "unknown" from a SEG segment's label, property type
    and property category (PS3.3 C.8.20.4)."""
    label = str(segment.get("SegmentLabel", "") or "")
    types = {str(c.CodeValue) for c in segment.get("SegmentedPropertyTypeCodeSequence", [])}
    cats = {str(c.CodeValue) for c in segment.get("SegmentedPropertyCategoryCodeSequence", [])}
    if (_is_tumour(label, types) or cats & LESION_CATEGORIES) and not cats & ANATOMY_CATEGORIES:
        return "tumour"
    if types & LIVER_CODES or (LIVER_RE.search(label) and not _is_tumour(label)):
        return "liver"
    if cats & ANATOMY_CATEGORIES or ORGAN_RE.search(label):
        return "organ"
    return "unknown"


class RoiSource(Protocol):
    """Finds a tumour ROI for ``target`` in the exam's annotation objects, or says why not."""

    name: str

    def find(self, objects: list[Dataset], target: SeriesGeometry, images: dict[str, Dataset]) -> Roi | str: ...


def _same_frame(frame_uid: str | None, target: SeriesGeometry) -> bool:
    return not frame_uid or not target.frame_uid or frame_uid == target.frame_uid


#: Manufacturer of the results this node writes (mvi_node.report.inputs.MANUFACTURER)
NODE_MANUFACTURER = "mvi-node project"


def _own_automatic(seg: Dataset, segments: list[Dataset]) -> bool:
    """A SEG this node wrote itself (sent back with a study): never taken for an annotation."""
    return (str(seg.get("Manufacturer", "")) == NODE_MANUFACTURER and bool(segments)
            and all(str(s.get("SegmentAlgorithmType", "")) == "AUTOMATIC" for s in segments))


class SegSource:
    name = "seg"
    modality = "SEG"

    def find(self, objects, target, images):
        import highdicom as hd

        notes, found, liver = [], None, None
        for obj in objects:
            seg = hd.seg.segread(_full(obj).filename) if getattr(obj, "filename", None) else hd.seg.Segmentation.from_dataset(obj)
            if not _same_frame(str(seg.get("FrameOfReferenceUID", "") or ""), target):
                notes.append(f"SEG {seg.SOPInstanceUID}: other frame of reference")
                continue
            segs = list(seg.SegmentSequence)
            if _own_automatic(seg, segs):
                notes.append(f"SEG {seg.SOPInstanceUID}: an automatic result of this node, not an annotation")
                continue
            kinds = {int(s.SegmentNumber): segment_kind(s) for s in segs}
            livers = {n for n, k in kinds.items() if k == "liver"}
            if livers and liver is None:
                mask = planes_to_series(self._planes(seg, livers), target)
                liver = mask if mask.any() else None
            numbers = {n for n, k in kinds.items() if k == "tumour"}
            if not numbers and len(segs) == 1 and kinds[int(segs[0].SegmentNumber)] == "unknown":
                numbers = {int(segs[0].SegmentNumber)}
            if not numbers:
                organs = ", ".join(sorted({str(s.get("SegmentLabel", "") or k) for s, k in
                                           ((s, kinds[int(s.SegmentNumber)]) for s in segs)}))
                notes.append(f"SEG {seg.SOPInstanceUID}: no tumour segment (only {organs})" if kinds else
                             f"SEG {seg.SOPInstanceUID}: no segment")
                continue
            if found is not None:
                continue
            planes = self._planes(seg, numbers)
            mask = planes_to_series(planes, target)
            if mask.any():
                mapped = not all(target.index_of(p.sop_uid, p.frame) is not None for p in planes if p.mask.any())
                found = Roi(mask, target, self.name, str(seg.SOPInstanceUID), "mask", mapped)
            else:
                notes.append(f"SEG {seg.SOPInstanceUID}: tumour segment does not reach the target series")
        if found is not None:
            found.liver = liver
            return found
        return "; ".join(notes) or "no SEG"

    @staticmethod
    def _planes(seg, numbers: set[int]) -> list[PlaneMask]:
        pixels = seg.pixel_array
        if pixels.ndim == 2:
            pixels = pixels[None]
        frac = str(seg.get("SegmentationType", "")) == "FRACTIONAL"
        limit = float(seg.get("MaximumFractionalValue", 255)) / 2 if frac else 0
        shared = seg.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
        out = []
        for i, fg in enumerate(seg.PerFrameFunctionalGroupsSequence):
            def group(kw: str) -> Dataset:  # per-frame, else shared (PS3.3 C.7.6.16)
                return (fg.get(kw) or shared.get(kw))[0]

            if int(group("SegmentIdentificationSequence").ReferencedSegmentNumber) not in numbers:
                continue
            pos = group("PlanePositionSequence").ImagePositionPatient
            ori = group("PlaneOrientationSequence").ImageOrientationPatient
            meas = group("PixelMeasuresSequence")
            sop, frame = None, None
            for der in fg.get("DerivationImageSequence", []):
                for src in der.get("SourceImageSequence", []):
                    sop, frame = str(src.ReferencedSOPInstanceUID), _first_frame(src)
            out.append(PlaneMask(pixels[i] > limit, np.asarray(pos, float), np.asarray(ori, float),
                                 (float(meas.PixelSpacing[0]), float(meas.PixelSpacing[1])),
                                 float(meas.get("SliceThickness") or 0) or None, sop, frame=frame))
        return out


def _mask_from_world(polys: list[tuple[str, np.ndarray]], target: SeriesGeometry) -> np.ndarray:
    """Planar shapes in patient coordinates -> target mask (each on its nearest slice)."""
    mask = np.zeros(target.shape, bool)
    for kind, pts in polys:
        idx = world_to_index(pts, target)
        k = float(np.mean(idx[:, 2]))
        z = int(round(k))
        if abs(k - z) > 0.5 or not 0 <= z < target.shape[0]:
            continue
        mask[z] ^= shape_mask(target.shape[1:], kind, idx[:, :2])
    return mask


class RtStructSource:
    name = "rtstruct"
    modality = "RTSTRUCT"

    def find(self, objects, target, images):
        notes = []
        for obj in objects:
            ds = _full(obj)
            names = {int(r.ROINumber): str(r.get("ROIName", "")) for r in ds.get("StructureSetROISequence", [])}
            frames = {int(r.ROINumber): str(r.get("ReferencedFrameOfReferenceUID", ""))
                      for r in ds.get("StructureSetROISequence", [])}
            kinds = {int(o.ReferencedROINumber): str(o.get("RTROIInterpretedType", ""))
                     for o in ds.get("RTROIObservationsSequence", [])}
            for rc in ds.get("ROIContourSequence", []):
                n = int(rc.ReferencedROINumber)
                organ = kinds.get(n, "").upper() in ("ORGAN", "EXTERNAL", "AVOIDANCE", "BOLUS")
                if organ or not _is_tumour(names.get(n, "") + " " + kinds.get(n, "")) or not _same_frame(frames.get(n), target):
                    continue
                polys = [("POLYGON", np.asarray(c.ContourData, float).reshape(-1, 3))
                         for c in rc.get("ContourSequence", []) if str(c.get("ContourGeometricType", "")) == "CLOSED_PLANAR"]
                mask = _mask_from_world(polys, target)
                if mask.any():
                    return Roi(mask, target, self.name, str(ds.SOPInstanceUID), "mask", True)
            notes.append(f"RTSTRUCT {ds.SOPInstanceUID}: no tumour contour on the target series")
        return "; ".join(notes) or "no RTSTRUCT"


def _first_frame(ref: Dataset) -> int | None:
    """ReferencedFrameNumber of an image reference (its first value), None when absent."""
    value = ref.get("ReferencedFrameNumber")
    if value is None or value == "":
        return None
    return int(value[0] if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else value)


def _frames(ref: Dataset) -> list[int | None]:
    """Every ReferencedFrameNumber of an image reference, [None] when absent (PS3.3 C.10.5:
    a shape on a multi-frame image cites its frames)."""
    value = ref.get("ReferencedFrameNumber")
    if value is None or value == "":
        return [None]
    return [int(v) for v in (value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"
                             else [value])]


def _image_shapes(items, images: dict[str, Dataset]) -> list[PlaneMask]:
    """(graphic type, (column,row) points, referenced SOP UID, frame) -> masks on those images."""
    planes = []
    for kind, xy, sop, frame in items:
        ref = lookup(images, sop, frame)
        if ref is None:
            continue
        plane = plane_of(ref)
        plane.mask = shape_mask(plane.mask.shape, kind, xy)
        planes.append(plane)
    return planes


def _walk(items) -> Iterable[Dataset]:
    for it in items:
        yield it
        yield from _walk(it.get("ContentSequence", []))


class SrSource:
    """TID 1500 planar ROIs: SCOORD on an image, or SCOORD3D in patient coordinates."""

    name = "sr"
    modality = "SR"
    AREA = ("POLYGON", "CIRCLE", "ELLIPSE", "POLYLINE")

    def find(self, objects, target, images):
        notes = []
        for obj in objects:
            ds = _full(obj)
            on_images, in_world = [], []
            kinds = set()
            for it in _walk(ds.get("ContentSequence", [])):
                vt, gt = str(it.get("ValueType", "")), str(it.get("GraphicType", ""))
                if vt == "SCOORD" and gt in self.AREA:
                    for ref in it.get("ContentSequence", []):
                        for sop in ref.get("ReferencedSOPSequence", []):
                            on_images += [(gt, np.asarray(it.GraphicData, float), str(sop.ReferencedSOPInstanceUID), f)
                                          for f in _frames(sop)]
                    kinds.add(gt)
                elif vt == "SCOORD3D" and gt in ("POLYGON", "ELLIPSE") and _same_frame(
                        str(it.get("ReferencedFrameOfReferenceUID", "")), target):
                    in_world.append((gt, np.asarray(it.GraphicData, float).reshape(-1, 3)))
                    kinds.add(gt)
            mask = planes_to_series(_image_shapes(on_images, images), target) | _mask_from_world(in_world, target)
            if mask.any():
                kind = "circle" if kinds <= {"CIRCLE", "ELLIPSE"} else "mask"
                mapped = in_world != [] or any(target.index_of(s, f) is None for _k, _x, s, f in on_images)
                return Roi(mask, target, self.name, str(ds.SOPInstanceUID), kind, mapped)
            notes.append(f"SR {ds.SOPInstanceUID}: no planar ROI on the target series")
        return "; ".join(notes) or "no SR"


class GspsSource:
    """Presentation-state graphics (PIXEL units) on referenced images."""

    name = "gsps"
    modality = "PR"

    def find(self, objects, target, images):
        notes = []
        for obj in objects:
            ds = _full(obj)
            items, kinds = [], set()
            for ann in ds.get("GraphicAnnotationSequence", []):
                refs = [(str(r.ReferencedSOPInstanceUID), f) for r in ann.get("ReferencedImageSequence", [])
                        for f in _frames(r)]
                for g in ann.get("GraphicObjectSequence", []):
                    gt = str(g.get("GraphicType", ""))
                    closed = gt == "POLYLINE" and list(g.GraphicData[:2]) == list(g.GraphicData[-2:])
                    if str(g.get("GraphicAnnotationUnits", "")) != "PIXEL" or not (gt in ("CIRCLE", "ELLIPSE") or closed):
                        continue
                    kinds.add(gt)
                    items += [(gt, np.asarray(g.GraphicData, float), sop, f) for sop, f in refs]
            mask = planes_to_series(_image_shapes(items, images), target)
            if mask.any():
                kind = "circle" if kinds <= {"CIRCLE", "ELLIPSE"} else "mask"
                mapped = any(target.index_of(s, f) is None for _k, _x, s, f in items)
                return Roi(mask, target, self.name, str(ds.SOPInstanceUID), kind, mapped)
            notes.append(f"GSPS {ds.SOPInstanceUID}: no circle/ellipse/closed polyline on the target series")
        return "; ".join(notes) or "no GSPS"


DEFAULT_SOURCES: tuple[RoiSource, ...] = (SegSource(), RtStructSource(), SrSource(), GspsSource())
