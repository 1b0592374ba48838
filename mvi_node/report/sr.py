"""The MVI result as a Comprehensive 3D SR, TID 1500 Imaging Measurement Report.

Root (126000, DCM) so OHIF's measurement viewport shows it; an Image Library of the
source slices; one measurement group per lesion (tracking identifier and UID, finding
type neoplasm, site liver, NUM probability / threshold / maximum diameter / grade
probabilities, CODE finding), a TID 1410 planar-ROI group with an image region on the
key slice where the ROI is planar, TID 4019 algorithm identification, Contributing
Equipment naming the model, TEXT items for the clinical factors and the intended use.
An exam that could not be evaluated still gets an SR that says why.
"""

from __future__ import annotations

import highdicom as hd
from highdicom.sr import (
    AlgorithmIdentification,
    CodedConcept,
    Comprehensive3DSR,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    ImageRegion,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    QualitativeEvaluation,
    RelationshipTypeValues,
    SourceImageForRegion,
    TextContentItem,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from mvi_node import concepts
from mvi_node.common.frames import frame_number
from mvi_node.report.inputs import LesionResult, ModelIdentity, ReportInput
from mvi_node.report.uids import SR_SERIES_NUMBER, ResultUIDs

def _cc(code: concepts.Code) -> CodedConcept:
    return CodedConcept(code.value, code.scheme, code.meaning)


SCHEME, SCHEME_NAME = concepts.SCHEME, concepts.SCHEME_NAME
NOT_EVALUATED = _cc(concepts.NOT_EVALUATED)
MTD = _cc(concepts.MTD)
CLINICAL_FACTOR = _cc(concepts.CLINICAL_FACTOR)
INTENDED_USE = _cc(concepts.INTENDED_USE)
THRESHOLD = _cc(concepts.THRESHOLD)
FINDING = _cc(concepts.FINDING)
COMMENT = _cc(concepts.COMMENT)
LIVER = _cc(concepts.LIVER)
UNITLESS = _cc(concepts.UNITLESS)
MM = _cc(concepts.MM)
ML = _cc(concepts.ML)
VOLUME = _cc(concepts.VOLUME)
CONTAINS = RelationshipTypeValues.CONTAINS


def grade_concept(grade: str) -> CodedConcept:
    return _cc(concepts.class_probability(grade))


def _text(name: CodedConcept, value: str) -> TextContentItem:
    return TextContentItem(name=name, value=str(value)[:1024] or "-", relationship_type=CONTAINS)


def _algorithm(model: ModelIdentity, threshold: float | None) -> AlgorithmIdentification:
    params = [f"sha256={model.sha256 or 'none'}"]
    if model.variant:
        params.append(f"variant={model.variant}")
    if model.reduced_precision:  # the quantised graph that ran (the sha256 above is its own)
        params.append(f"precision={model.reduced_precision}")
    if threshold is not None:
        params.append(f"threshold={threshold:.4f}")
    if model.calibration_digest:
        params.append(f"calibration={model.calibration_digest}")
    return AlgorithmIdentification(name=model.name or model.recipe or "mvi-node", version=model.version or "0",
                                   parameters=params)


def _observation_context(model: ModelIdentity) -> ObservationContext:
    device = DeviceObserverIdentifyingAttributes(
        uid=model.device_uid, name="mvi-node", manufacturer_name=model.manufacturer,
        model_name=model.label or None,
    )
    return ObservationContext(
        observer_device_context=ObserverContext(observer_type=codes.DCM.Device, observer_identifying_attributes=device)
    )


def _texts(inp: ReportInput) -> list[TextContentItem]:
    items = [_text(COMMENT, note) for note in inp.exam_notes]
    for key, value in inp.clinical_factors_used.items():
        if value is not None:
            items.append(_text(CLINICAL_FACTOR, f"{key}={value}"))
    if inp.roi_note:
        items.append(_text(COMMENT, inp.roi_note))
    for lesion in inp.lesions:
        for concept, value, basis in lesion.scores:
            items.append(_text(COMMENT, f"{lesion.tracking_id}: {concept.meaning} {value:.3f}"
                                        + (f" ({basis})" if basis else "")))
    if inp.image_only:
        items.append(_text(COMMENT, "Image-only model: clinical factors not used"))
    if inp.model.calibration and inp.evaluated:
        items.append(_text(COMMENT, f"Probability calibrated by {inp.model.calibration}"))
    items.append(_text(INTENDED_USE, f"Intended use: {inp.model.intended_use or 'not stated'}"))
    if inp.model.training_data:
        items.append(_text(COMMENT, f"Training data: {inp.model.training_data}"))
    return items


def _region(lesion: LesionResult) -> ImageRegion | None:
    region, key = lesion.roi_region, lesion.key_slice
    if region is None or key is None:
        return None
    frame = frame_number(key)  # a frame of an Enhanced instance is cited with its number
    source = SourceImageForRegion(str(key.SOPClassUID), str(key.SOPInstanceUID),
                                  referenced_frame_numbers=[frame] if frame is not None else None)
    if region.graphic_type == "CIRCLE":
        return ImageRegion(hd.sr.GraphicTypeValues.CIRCLE, region.points[:2].astype(float), source)
    # SCOORD has no POLYGON: a closed POLYLINE (first point = last point)
    return ImageRegion(hd.sr.GraphicTypeValues.POLYLINE, region.closed_polyline(), source)


def lesion_group(lesion: LesionResult, inp: ReportInput, tracking_uid: str):
    algo = _algorithm(inp.model, lesion.threshold)
    num = lambda name, value, unit, nd=6: Measurement(name=name, value=round(float(value), nd), unit=unit,  # noqa: E731
                                                       algorithm_id=algo)
    endpoint = inp.endpoint
    measurements = [num(_cc(endpoint.concept), lesion.probability, UNITLESS), num(THRESHOLD, lesion.threshold, UNITLESS)]
    if lesion.max_diameter_mm is not None:
        measurements.append(num(MTD, lesion.max_diameter_mm, MM, 1))
    if lesion.volume_ml is not None:
        measurements.append(num(VOLUME, lesion.volume_ml, ML, 2))
    for grade, p in (lesion.grade_probabilities or {}).items():
        measurements.append(num(grade_concept(grade), p, UNITLESS))
    for concept, value, _basis in lesion.scores:
        measurements.append(num(_cc(concept), value, UNITLESS))
    common = dict(
        tracking_identifier=TrackingIdentifier(uid=tracking_uid, identifier=lesion.tracking_id[:64] or "Tumor"),
        finding_type=_cc(endpoint.finding_type),
        algorithm_id=algo,
        finding_sites=[FindingSite(LIVER)],
        measurements=measurements,
        qualitative_evaluations=[QualitativeEvaluation(FINDING, _cc(endpoint.positive if lesion.predicted_mvi
                                                                    else endpoint.negative))],
    )
    region = _region(lesion)
    if region is not None:
        return PlanarROIMeasurementsAndQualitativeEvaluations(referenced_region=region, **common)
    return MeasurementsAndQualitativeEvaluations(**common)


def other_lesion_group(lesion, inp: ReportInput):
    """A further lesion of an automatic ROI: volume and diameter, its MVI not evaluated."""
    algo = _algorithm(inp.model, None)
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=lesion.tracking_uid, identifier=lesion.tracking_id[:64]),
        finding_type=_cc(inp.endpoint.finding_type),
        algorithm_id=algo,
        finding_sites=[FindingSite(LIVER)],
        measurements=[Measurement(name=MTD, value=round(float(lesion.max_diameter_mm), 1), unit=MM, algorithm_id=algo),
                      Measurement(name=VOLUME, value=round(float(lesion.volume_ml), 2), unit=ML, algorithm_id=algo)],
        qualitative_evaluations=[QualitativeEvaluation(FINDING, NOT_EVALUATED)],
    )


def not_evaluated_group(inp: ReportInput, tracking_uid: str):
    model = inp.model
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=tracking_uid, identifier="Exam"),
        finding_type=_cc(inp.endpoint.finding_type),
        algorithm_id=_algorithm(model, None) if model.recipe or model.name else None,
        finding_sites=[FindingSite(LIVER)],
        qualitative_evaluations=[QualitativeEvaluation(FINDING, NOT_EVALUATED)],
    )
    if inp.not_run:
        # no recipe could evaluate the exam: one line per candidate recipe
        group[0].ContentSequence.append(_text(COMMENT, f"Not evaluated: {inp.outcome}."))
        for recipe, why in inp.not_run:
            group[0].ContentSequence.append(_text(COMMENT, f"{recipe}: {why}" if recipe else why))
        return group
    detail = f" {inp.outcome_detail}" if inp.outcome_detail else ""
    group[0].ContentSequence.append(_text(COMMENT, f"Not evaluated: {inp.outcome}.{detail}"))
    return group


def title_of(inp: ReportInput) -> str:
    ep = inp.endpoint
    if not inp.evaluated:
        return f"{ep.title} not evaluated: {inp.outcome}"
    top = max(inp.lesions, key=lambda l: l.probability)
    return f"{ep.present if any(l.predicted_mvi for l in inp.lesions) else ep.absent} p={top.probability:.3f}"


def _describable(ds: Dataset) -> bool:
    if str(ds.get("Modality", "")) not in ("CT", "MR", "PT"):
        return True
    return all(k in ds for k in ("PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient"))


def _cite_frames(report: Dataset, images: list[Dataset]) -> None:
    """Image Library entries of frames of Enhanced instances get their ReferencedFrameNumber
    (highdicom cites the SOP only); an entry is matched to its frame view by SOP and by the
    Image Position (Patient) it describes (TID 1604)."""
    frames = {(str(d.SOPInstanceUID), tuple(round(float(v), 3) for v in d.ImagePositionPatient)): frame_number(d)
              for d in images if frame_number(d) is not None}
    if not frames:
        return
    names = {codes.DCM.ImagePositionPatientX.value: 0, codes.DCM.ImagePositionPatientY.value: 1,
             codes.DCM.ImagePositionPatientZ.value: 2}

    def walk(items) -> None:
        for item in items:
            if str(item.get("ValueType", "")) == "IMAGE" and item.get("ReferencedSOPSequence"):
                pos = [None, None, None]
                for d in item.get("ContentSequence", []):
                    code = str(d.ConceptNameCodeSequence[0].CodeValue) if d.get("ConceptNameCodeSequence") else ""
                    if code in names and d.get("MeasuredValueSequence"):
                        pos[names[code]] = round(float(d.MeasuredValueSequence[0].NumericValue), 3)
                ref = item.ReferencedSOPSequence[0]
                frame = frames.get((str(ref.ReferencedSOPInstanceUID), tuple(pos)))
                if frame is not None:
                    ref.ReferencedFrameNumber = frame
            walk(item.get("ContentSequence", []))

    walk(report[0].ContentSequence)


def build_sr(inp: ReportInput, uids: ResultUIDs) -> Dataset:
    """One SR for one exam x model; ``inp.evidence[0]`` gives patient and study."""
    if not inp.evidence:
        raise ValueError("report input has no evidence instance (patient/study identity unknown)")
    if inp.evaluated:
        groups = [lesion_group(l, inp, l.tracking_uid or uids.tracking(l.tracking_id)) for l in inp.lesions]
        groups += [other_lesion_group(o, inp) for o in inp.other_lesions]
    else:
        groups = [not_evaluated_group(inp, uids.tracking("exam"))]
    for item in _texts(inp):
        groups[0][0].ContentSequence.append(item)
    # the Image Library (TID 1601) describes cross-sectional images by their plane and
    # spacing: an image without them is evidence still, but not a library entry
    images = [ds for ds in inp.evidence if "Rows" in ds and "SOPClassUID" in ds and _describable(ds)]
    report = MeasurementReport(
        observation_context=_observation_context(inp.model),
        procedure_reported=_cc(inp.procedure),
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
        referenced_images=images or None,
    )
    _cite_frames(report, images)
    model = inp.model
    equipment = hd.ContributingEquipment(
        manufacturer=model.manufacturer,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=(model.label or "mvi-node")[:64],
        software_versions=model.software_versions,
        contribution_description=f"{inp.endpoint.title} prediction by {model.label} (sha256 {model.sha256 or 'none'})"[:1024],
    )
    equipment.DeviceUID = model.device_uid
    caution = "NOT FOR CLINICAL USE " if model.synthetic else ""
    sr = Comprehensive3DSR(
        evidence=list({str(d.SOPInstanceUID): d for d in inp.evidence}.values()),  # frames share their SOP
        content=report[0],
        series_instance_uid=uids.sr_series,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uids.sr,
        instance_number=1,
        manufacturer=model.manufacturer,
        is_complete=True,
        series_description=(caution + f"{inp.endpoint.title} AI result")[:64],
        contributing_equipment=[equipment],
        previous_versions=inp.predecessors or None,
    )
    sr.ContentDescription = (f"{title_of(inp)}" + (" - NOT FOR CLINICAL USE" if model.synthetic else ""))[:64]
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = model.manufacturer
    sr.CodingSchemeIdentificationSequence = [scheme]
    # free texts (training data, factors) may be non-ASCII: UTF-8 (PS3.3 C.12.1.1.2)
    sr.SpecificCharacterSet = "ISO_IR 192"
    return sr
