"""Radiologist annotations as they arrive at a node: DICOM SEG, circle GSPS, ROI SR.

Every recipe needs an ROI; sites deliver it as a segmentation object, as circles drawn
on key images (the 000 paper's workflow; GSPS) or as a TID 1500 measurement report with
planar circle ROIs. All are produced with highdicom so their structure matches what
real viewers write.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pydicom

from mvi_node.common.frames import cite_source_frames, frame_datasets, seg_source_arguments
from mvi_node.synth.dicomio import ExamContext, SeriesPlan, derive_uid, pin_dataset
from mvi_node.synth.vendors import VENDOR_PROFILES


def _sources(paths: list[Path], indices: list[int]) -> list[pydicom.Dataset]:
    """The headers of images ``indices``; of an Enhanced (one multi-frame file) series,
    its one header for each index."""
    if _frames(paths):
        header = pydicom.dcmread(paths[0], stop_before_pixels=True)
        return [header for _ in indices]
    return [pydicom.dcmread(paths[i], stop_before_pixels=True) for i in indices]


def _images(paths: list[Path], indices: list[int]) -> list[pydicom.Dataset]:
    """Headers of images ``indices``: classic files, or frame views of the one Enhanced file."""
    if _frames(paths):
        views = frame_datasets(pydicom.dcmread(paths[0], stop_before_pixels=True))
        return [views[i] for i in indices]
    return _sources(paths, indices)


def _frames(paths: list[Path]) -> int:
    """Frames of a series written as one Enhanced multi-frame instance, else 0."""
    if len(paths) != 1:
        return 0
    ds = pydicom.dcmread(paths[0], stop_before_pixels=True, specific_tags=["NumberOfFrames"])
    return int(ds.get("NumberOfFrames") or 0)


def _frame_numbers(paths: list[Path], indices: list[int]) -> list[int | None]:
    """ReferencedFrameNumber of each image (None for single-frame images)."""
    return [i + 1 for i in indices] if _frames(paths) else [None for _ in indices]


def write_seg(ctx: ExamContext, ref: SeriesPlan, paths: list[Path], indices: list[int], mask: np.ndarray,
              number: int, when: dt.datetime) -> tuple[str, Path]:
    """DICOM SEG (one segment "Tumor") of ``mask`` (slices matching ``indices`` of ``ref``)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    images = _images(paths, indices)
    args = seg_source_arguments(images, (mask > 0).astype(np.uint8))
    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Tumor",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    uid = derive_uid(ctx.spec.key(), "seg")
    seg = hd.seg.Segmentation(
        **args,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc],
        series_instance_uid=uid,
        series_number=number,
        sop_instance_uid=derive_uid(uid, 0),
        instance_number=1,
        manufacturer="mvi-node synthetic",
        manufacturer_model_name="synth-annotator",
        software_versions="1",
        device_serial_number="SYN0001",
        content_label="TUMOR",
        content_description="Tumour outline",
        content_creator_name="SYNTH^RADIOLOGIST",
        series_description="Tumor SEG",
    )
    cite_source_frames(seg, images)
    pin_dataset(seg, uid, when)
    out = ctx.series_dir(number) / "I0001.dcm"
    out.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(out, enforce_file_format=True)
    return uid, out


def circles(mask2d: np.ndarray, labels2d: np.ndarray, pixel_mm: float) -> list[tuple[float, float, float]]:
    """(column, row, radius px) per lesion in the slice, ~1 cm wider than the lesion."""
    out = []
    for k in np.unique(labels2d[mask2d]):
        rr, cc = np.nonzero(labels2d == k)
        cy, cx = rr.mean(), cc.mean()
        r = float(np.sqrt(((rr - cy) ** 2 + (cc - cx) ** 2).max())) + 0.5 + 5.0 / pixel_mm
        out.append((float(cx) + 0.5, float(cy) + 0.5, r))
    return out


def write_gsps(ctx: ExamContext, ref: SeriesPlan, paths: list[Path], indices: list[int], truth: np.ndarray,
               number: int, when: dt.datetime) -> tuple[str, Path]:
    """Grayscale Softcopy Presentation State with a CIRCLE on each slice showing tumour."""
    import highdicom as hd

    keep = [(i, z) for z, i in enumerate(indices) if truth[z].any()]
    src = _sources(paths, [i for i, _ in keep])
    frames = _frame_numbers(paths, [i for i, _ in keep])
    layer = hd.pr.GraphicLayer(layer_name="ROI", order=1, description="tumour circles")
    anns = []
    for ds, frame, (_, z) in zip(src, frames, keep):
        objs = [
            hd.pr.GraphicObject(
                graphic_type=hd.pr.GraphicTypeValues.CIRCLE,
                graphic_data=np.array([[cx, cy], [cx + r, cy]]),
                units=hd.pr.AnnotationUnitsValues.PIXEL,
            )
            for cx, cy, r in circles(truth[z] > 0, truth[z], float(ref.pixel_spacing[1]))
        ]
        anns.append(hd.pr.GraphicAnnotation(referenced_images=[ds], graphic_layer=layer, graphic_objects=objs,
                                            referenced_frame_number=frame))
    uid = derive_uid(ctx.spec.key(), "gsps")
    vendor = VENDOR_PROFILES[ctx.spec.vendor]
    pr = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=list({d.SOPInstanceUID: d for d in src}.values()),
        series_instance_uid=uid,
        series_number=number,
        sop_instance_uid=derive_uid(uid, 0),
        instance_number=1,
        manufacturer=vendor.manufacturer,
        manufacturer_model_name="synth-viewer",
        software_versions="1",
        device_serial_number="SYN0001",
        content_label="TUMOR",
        content_description="Tumour circles",
        graphic_annotations=anns,
        graphic_layers=[layer],
        content_creator_name="SYNTH^RADIOLOGIST",
    )
    pr.SeriesDescription = "Key images ROI"
    pr.BodyPartExamined = "ABDOMEN"  # lets validators decide Laterality (2C) is not needed
    pin_dataset(pr, uid, when)
    out = ctx.series_dir(number) / "I0001.dcm"
    out.parent.mkdir(parents=True, exist_ok=True)
    pr.save_as(out, enforce_file_format=True)
    return uid, out


def write_roi_sr(ctx: ExamContext, ref: SeriesPlan, paths: list[Path], indices: list[int], truth: np.ndarray,
                 number: int, when: dt.datetime) -> tuple[str, Path]:
    """TID 1500 measurement report: one planar CIRCLE ROI per lesion on its largest slice."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    uid = derive_uid(ctx.spec.key(), "roi-sr")
    groups, evidence = [], []
    for k in [int(v) for v in np.unique(truth) if v]:
        z = int(np.argmax((truth == k).sum(axis=(1, 2))))
        (src,) = _sources(paths, [indices[z]])
        (frame,) = _frame_numbers(paths, [indices[z]])
        evidence.append(src)
        cx, cy, r = next(c for c in circles(truth[z] == k, np.where(truth[z] == k, k, 0),
                                            float(ref.pixel_spacing[1])))
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.CIRCLE,
            graphic_data=np.array([[cx, cy], [cx + r, cy]]),
            source_image=hd.sr.SourceImageForRegion.from_source_image(
                src, referenced_frame_numbers=[frame] if frame else None),
        )
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=derive_uid(uid, "lesion", k),
                                                         identifier=f"Lesion {k}"),
            referenced_region=region,
            finding_type=codes.SCT.Neoplasm,
        ))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name="SYNTH^RADIOLOGIST"),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=observer),
        procedure_reported=(codes.LN.CTUnspecifiedBodyRegion if ctx.spec.modality == "ct"
                            else codes.LN.MRIUnspecifiedBodyRegion),
        imaging_measurements=groups,
    )
    unique = {d.SOPInstanceUID: d for d in evidence}
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(unique.values()),
        content=report,
        series_instance_uid=uid,
        series_number=number,
        sop_instance_uid=derive_uid(uid, 0),
        instance_number=1,
        manufacturer="mvi-node synthetic",
        is_complete=True,
    )
    sr.SeriesDescription = "Tumor ROI report"
    pin_dataset(sr, uid, when)
    out = ctx.series_dir(number) / "I0001.dcm"
    out.parent.mkdir(parents=True, exist_ok=True)
    sr.save_as(out, enforce_file_format=True)
    return uid, out
