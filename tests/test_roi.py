"""Tumour ROI from SEG, RTSTRUCT, TID 1500 SR and GSPS, mapped onto the arterial series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mvi_node.roi import NO_ROI, NoRoi, Roi, find_roi, series_geometry
from mvi_node.roi.geometry import shape_mask
from mvi_node.roi.model import largest_component
from mvi_node.select.series import read_headers
from mvi_node.synth import make_exam


def _exam(tmp_path, **kw):
    entry = make_exam(tmp_path, "ct", seed=11, index=0, mvi=True, matrix=128, hard_cases="none", **kw)
    headers = [ds for _p, ds in read_headers(tmp_path / entry["dicom_dir"])]
    return entry, headers


def _series(headers, uid):
    return [ds for ds in headers if str(ds.SeriesInstanceUID) == uid]


def _role(entry, role):
    return next(u for u, r in entry["series"].items() if r == role)


def _truth_on(entry, tmp_path, target) -> np.ndarray:
    """Truth (slice i = InstanceNumber i + 1) reordered like the ROI (sorted along the normal)."""
    truth = np.load(tmp_path / entry["truth"]["dir"] / "lesions.npy") > 0
    geo = series_geometry(target)
    return largest_component(truth[[int(d.InstanceNumber) - 1 for d in geo.datasets]])


def test_seg_on_the_arterial_series_is_the_truth(tmp_path):
    entry, headers = _exam(tmp_path, annotations="seg", seg_on="arterial")
    target = _series(headers, _role(entry, "ct_arterial"))
    roi = find_roi(headers, target)
    assert isinstance(roi, Roi) and roi.source == "seg" and not roi.mapped and roi.kind == "mask"
    assert np.array_equal(roi.mask, _truth_on(entry, tmp_path, target))


def test_seg_drawn_on_the_portal_phase_is_mapped_through_patient_coordinates(tmp_path):
    entry, headers = _exam(tmp_path, annotations="seg", seg_on="portal")
    assert entry["seg_reference"] == _role(entry, "ct_portal_venous")
    target = _series(headers, _role(entry, "ct_arterial"))
    roi = find_roi(headers, target)
    assert isinstance(roi, Roi) and roi.source == "seg" and roi.mapped
    assert np.array_equal(roi.mask, _truth_on(entry, tmp_path, target))


def test_gsps_circles_become_disks_on_their_slices(tmp_path):
    entry, headers = _exam(tmp_path, annotations="circle")
    target = _series(headers, _role(entry, "ct_arterial"))
    roi = find_roi(headers, target)
    truth = _truth_on(entry, tmp_path, target)
    assert isinstance(roi, Roi) and roi.source == "gsps" and roi.kind == "circle"
    # every slice of the main tumour (circles of a neighbouring lesion may touch it and join)
    assert {int(z) for z in np.nonzero(truth.any((1, 2)))[0]} <= set(roi.slices)
    assert (roi.mask | ~truth).all()  # the circle covers the tumour (drawn ~1 cm wider)
    assert roi.mask.sum() > truth.sum()


def test_no_annotation_is_a_reported_outcome(tmp_path):
    entry, headers = _exam(tmp_path, annotations="none")
    roi = find_roi(headers, _series(headers, _role(entry, "ct_arterial")))
    assert isinstance(roi, NoRoi) and roi.outcome == NO_ROI == "no tumour ROI"
    assert len(roi.reasons) == 4 and all("none in the exam" in r for r in roi.reasons)


def _square_world(plane_ds, r0, r1, c0, c1) -> np.ndarray:
    """Corners (edge coordinates) of a pixel square on ``plane_ds`` in patient coordinates."""
    ipp = np.asarray(plane_ds.ImagePositionPatient, float)
    iop = np.asarray(plane_ds.ImageOrientationPatient, float)
    sr, sc = (float(v) for v in plane_ds.PixelSpacing)
    pts = [(r0, c0), (r0, c1), (r1, c1), (r1, c0)]
    return np.array([ipp + (c - 0.5) * sc * iop[:3] + (r - 0.5) * sr * iop[3:] for r, c in pts])


def _rtstruct(frame_uid: str, contours: list[np.ndarray], name: str = "Tumour") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "RTSTRUCT"
    roi = Dataset()
    roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = 1, name, frame_uid
    ds.StructureSetROISequence = [roi]
    rc = Dataset()
    rc.ReferencedROINumber = 1
    items = []
    for pts in contours:
        c = Dataset()
        c.ContourGeometricType = "CLOSED_PLANAR"
        c.NumberOfContourPoints = len(pts)
        c.ContourData = [f"{v:.4f}" for v in pts.ravel()]
        items.append(c)
    rc.ContourSequence = items
    ds.ROIContourSequence = [rc]
    return ds


def test_rtstruct_contour_on_the_portal_series_lands_on_the_arterial_one(tmp_path):
    entry, headers = _exam(tmp_path, annotations="none")
    portal = series_geometry(_series(headers, _role(entry, "ct_portal_venous")))
    target = _series(headers, _role(entry, "ct_arterial"))
    z = portal.shape[0] // 2
    pts = _square_world(portal.datasets[z], 40, 60, 50, 80)
    rt = _rtstruct(str(portal.frame_uid), [pts])
    roi = find_roi(headers + [rt], target)
    assert isinstance(roi, Roi) and roi.source == "rtstruct" and roi.mapped
    expect = np.zeros(roi.mask.shape, bool)
    expect[z, 40:60, 50:80] = True  # arterial and portal share the grid in the phantom
    assert np.array_equal(roi.mask, expect)


def test_rtstruct_of_another_frame_of_reference_is_not_used(tmp_path):
    entry, headers = _exam(tmp_path, annotations="none")
    target = _series(headers, _role(entry, "ct_arterial"))
    geo = series_geometry(target)
    rt = _rtstruct(generate_uid(), [_square_world(geo.datasets[3], 40, 60, 50, 80)])
    assert isinstance(find_roi(headers + [rt], target), NoRoi)


def test_tid1500_planar_roi_polygon(tmp_path):
    hd = pytest.importorskip("highdicom")
    from pydicom.sr.codedict import codes

    entry, headers = _exam(tmp_path, annotations="none")
    target = _series(headers, _role(entry, "ct_arterial"))
    geo = series_geometry(target)
    src = pydicom.dcmread(geo.datasets[5].filename)
    poly = np.array([[30.0, 40.0], [70.0, 40.0], [70.0, 90.0], [30.0, 90.0], [30.0, 40.0]])  # (column, row)
    region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=poly,
                               source_image=hd.sr.SourceImageForRegion.from_source_image(src))
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="tumour 1"),
        referenced_region=region, finding_type=codes.SCT.Neoplasm)
    observer = hd.sr.ObserverContext(observer_type=codes.DCM.Person,
                                     observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name="Reader^A"))
    report = hd.sr.MeasurementReport(observation_context=hd.sr.ObservationContext(observer_person_context=observer),
                                     procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=[group])
    sr = hd.sr.Comprehensive3DSR(evidence=[src], content=report, series_instance_uid=hd.UID(), series_number=900,
                                 sop_instance_uid=hd.UID(), instance_number=1)
    roi = find_roi(headers + [sr], target)
    assert isinstance(roi, Roi) and roi.source == "sr" and roi.slices == [5] and not roi.mapped
    assert np.array_equal(roi.mask[5], shape_mask((128, 128), "POLYGON", poly))
    assert roi.mask[5, 40:90, 30:70].all() and roi.mask[5].sum() == 40 * 50


def test_seg_wins_over_a_later_source(tmp_path):
    entry, headers = _exam(tmp_path, annotations="seg", seg_on="arterial")
    target = _series(headers, _role(entry, "ct_arterial"))
    geo = series_geometry(target)
    rt = _rtstruct(str(geo.frame_uid), [_square_world(geo.datasets[2], 1, 5, 1, 5)])
    assert find_roi(headers + [rt], target).source == "seg"


def test_shape_mask_circle_and_ellipse():
    disk = shape_mask((50, 50), "CIRCLE", np.array([[25.0, 25.0], [35.0, 25.0]]))
    assert disk.sum() == pytest.approx(np.pi * 100, rel=0.05) and disk[24, 24]
    ell = shape_mask((50, 50), "ELLIPSE", np.array([[5.0, 25.0], [45.0, 25.0], [25.0, 20.0], [25.0, 30.0]]))
    assert ell.sum() == pytest.approx(np.pi * 20 * 5, rel=0.06) and not ell[10, 25]


def test_tid1500_scoord3d_polygon_in_patient_coordinates(tmp_path):
    hd = pytest.importorskip("highdicom")
    from pydicom.sr.codedict import codes

    entry, headers = _exam(tmp_path, annotations="none")
    target = _series(headers, _role(entry, "ct_arterial"))
    geo = series_geometry(target)
    src = pydicom.dcmread(geo.datasets[7].filename)
    pts = _square_world(src, 30, 50, 60, 90)
    region = hd.sr.ImageRegion3D(graphic_type=hd.sr.GraphicTypeValues3D.POLYGON,
                                 graphic_data=np.vstack([pts, pts[:1]]), frame_of_reference_uid=geo.frame_uid)
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="tumour 1"),
        referenced_region=region, finding_type=codes.SCT.Neoplasm)
    observer = hd.sr.ObserverContext(observer_type=codes.DCM.Person,
                                     observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name="Reader^A"))
    report = hd.sr.MeasurementReport(observation_context=hd.sr.ObservationContext(observer_person_context=observer),
                                     procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=[group])
    sr = hd.sr.Comprehensive3DSR(evidence=[src], content=report, series_instance_uid=hd.UID(), series_number=901,
                                 sop_instance_uid=hd.UID(), instance_number=1)
    roi = find_roi(headers + [sr], target)
    assert isinstance(roi, Roi) and roi.source == "sr" and roi.slices == [7]
    expect = np.zeros((128, 128), bool)
    expect[30:50, 60:90] = True
    assert np.array_equal(roi.mask[7], expect)


def _organ_seg(entry, tmp_path, headers, label: str = "Liver") -> Path:
    """A second SEG, as a real GE exam carried: segment "Liver" (SCT 10200004, category
    Anatomical Structure) over the whole liver of the arterial series."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    target = _series(headers, _role(entry, "ct_arterial"))
    ordered = sorted(target, key=lambda d: int(d.InstanceNumber))
    liver = np.load(tmp_path / entry["truth"]["dir"] / "liver.npy") > 0
    keep = [i for i in range(len(ordered)) if liver[i].any()]
    sources = [pydicom.dcmread(ordered[i].filename) for i in keep]
    desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label=label,
        segmented_property_category=codes.SCT.AnatomicalStructure, segmented_property_type=codes.SCT.Liver,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=liver[keep].astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[desc],
        series_instance_uid=generate_uid(), series_number=90, sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer="test", manufacturer_model_name="test", software_versions="1", device_serial_number="1")
    path = tmp_path / "liver_seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    return path


def test_a_liver_seg_beside_the_tumour_seg_is_the_liver_not_the_tumour(tmp_path):
    entry, headers = _exam(tmp_path, annotations="seg", seg_on="arterial")
    target = _series(headers, _role(entry, "ct_arterial"))
    path = _organ_seg(entry, tmp_path, headers)
    organ = pydicom.dcmread(path, stop_before_pixels=True)
    organ.filename = str(path)
    # the liver SEG first: it used to win as "the only segment"
    roi = find_roi([organ, *headers], target)
    assert isinstance(roi, Roi) and roi.source == "seg"
    assert np.array_equal(roi.mask, _truth_on(entry, tmp_path, target))
    assert roi.liver is not None and roi.liver.sum() > 5 * roi.mask.sum()
    assert (roi.mask & roi.liver).sum() > 0.95 * roi.mask.sum()  # the tumour lies in the liver


def test_an_exam_whose_only_outline_is_an_organ_has_no_tumour_roi(tmp_path):
    entry, headers = _exam(tmp_path, annotations="none")
    path = _organ_seg(entry, tmp_path, headers)
    organ = pydicom.dcmread(path, stop_before_pixels=True)
    organ.filename = str(path)
    roi = find_roi([organ, *headers], _series(headers, _role(entry, "ct_arterial")))
    assert isinstance(roi, NoRoi) and any("no tumour segment (only Liver)" in r for r in roi.reasons)
