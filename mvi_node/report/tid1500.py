"""The MVI result as a Comprehensive 3D SR, TID 1500 Imaging Measurement Report.

PS3.16 TID 1500 (root (126000, DCM), so OHIF's measurement viewport shows it), one
TID 1410 planar-ROI measurement group per evaluated lesion with the analysed region on
the key slice, TID 4019 algorithm identification, Contributing Equipment naming the
model, and TEXT items for the clinical factors used and the intended use. An exam that
could not be evaluated still gets an SR that says why.
"""

from __future__ import annotations

from typing import Any

import numpy as np
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
    SourceImageForRegion,
    TextContentItem,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from highdicom.sr import RelationshipTypeValues
from pydicom.sr.codedict import codes

from mvi_node.report.identity import MANUFACTURER, SCHEME, SCHEME_NAME, ModelIdentity, derived_uid

MVI_PROBABILITY = CodedConcept("MVI-P", SCHEME, "Microvascular invasion probability")
NOT_EVALUATED = CodedConcept("MVI-NE", SCHEME, "Microvascular invasion not evaluated")
THRESHOLD = CodedConcept("122411", "DCM", "Threshold Value")
FINDING = CodedConcept("121071", "DCM", "Finding")
COMMENT = CodedConcept("121106", "DCM", "Comment")
MTD = CodedConcept("M-MTD", SCHEME, "Maximum tumor diameter")
INVASION_PRESENT = CodedConcept("372287009", "SCT", "Vascular invasion by tumor present")
INVASION_ABSENT = CodedConcept("127494000", "SCT", "No vascular invasion by tumor")
NEOPLASM = CodedConcept("108369006", "SCT", "Neoplasm")
LIVER = CodedConcept("10200004", "SCT", "Liver")
CT_PROCEDURE = CodedConcept("25045-6", "LN", "CT unspecified body region")
UNITLESS = CodedConcept("1", "UCUM", "no units")
MM = CodedConcept("mm", "UCUM", "mm")
CONTAINS = RelationshipTypeValues.CONTAINS


def _algorithm(model: ModelIdentity, threshold: float | None) -> AlgorithmIdentification:
    params = [f"sha256={model.sha256}", f"variant={model.variant}"]
    if threshold is not None:
        params.append(f"threshold={threshold:.4f}")
    return AlgorithmIdentification(name=model.recipe, version=model.version, parameters=params)


def _observation_context(model: ModelIdentity) -> ObservationContext:
    device = DeviceObserverIdentifyingAttributes(
        uid=model.device_uid, name="mvi-node", manufacturer_name=MANUFACTURER, model_name=model.label.strip() or None
    )
    return ObservationContext(
        observer_device_context=ObserverContext(observer_type=codes.DCM.Device, observer_identifying_attributes=device)
    )


def _texts(res: Any, model: ModelIdentity) -> list[TextContentItem]:
    lines = []
    if res.factors:
        used = ", ".join(
            f"{k}={v}" + (f" ({res.factors_origin.get(k)})" if res.factors_origin.get(k) else "")
            for k, v in res.factors.items()
            if v is not None
        )
        variant = "clinical factors used" if res.clinical_factors_used else "image-only model (factors incomplete)"
        lines.append(f"Clinical factors: {used or 'none'}; {variant}")
        if res.clinical_missing:
            lines.append(f"Missing clinical factors: {', '.join(res.clinical_missing)}")
    lines.append(f"Intended use: {model.intended_use or 'not stated'}")
    lines.append(f"Training data: {model.training_data or 'not stated'}")
    return [TextContentItem(name=COMMENT, value=text[:1024], relationship_type=CONTAINS) for text in lines]


def _region(key: Dataset, box: dict[str, float] | None) -> ImageRegion | None:
    """The analysed square on the key slice as a closed POLYLINE, image-relative pixel
    coordinates (column, row) as in PS3.3 C.18.6.1.2."""
    if not box:
        return None
    rows, cols = int(key.Rows), int(key.Columns)
    half_r, half_c = box["edge_rows"] / 2, box["edge_cols"] / 2
    r0, r1 = max(0.0, box["center_row"] - half_r), min(float(rows), box["center_row"] + half_r)
    c0, c1 = max(0.0, box["center_col"] - half_c), min(float(cols), box["center_col"] + half_c)
    points = np.array([[c0, r0], [c1, r0], [c1, r1], [c0, r1], [c0, r0]], dtype=float)
    return ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=points,
        source_image=SourceImageForRegion(str(key.SOPClassUID), str(key.SOPInstanceUID)),
    )


def lesion_group(res: Any, model: ModelIdentity, key: Dataset, box: dict | None, tracking_uid: str):
    algo = _algorithm(model, res.threshold)
    tracking = TrackingIdentifier(uid=tracking_uid, identifier="Tumor 1")
    measurements = [
        Measurement(name=MVI_PROBABILITY, value=round(float(res.probability), 6), unit=UNITLESS, algorithm_id=algo),
        Measurement(name=THRESHOLD, value=round(float(res.threshold), 6), unit=UNITLESS, algorithm_id=algo),
    ]
    mtd = (res.factors or {}).get("mtd_mm")
    if mtd is not None:
        measurements.append(Measurement(name=MTD, value=round(float(mtd), 1), unit=MM, algorithm_id=algo))
    finding = QualitativeEvaluation(FINDING, INVASION_PRESENT if res.predicted_mvi else INVASION_ABSENT)
    common = dict(
        tracking_identifier=tracking,
        finding_type=NEOPLASM,
        algorithm_id=algo,
        finding_sites=[FindingSite(LIVER)],
        measurements=measurements,
        qualitative_evaluations=[finding],
    )
    region = _region(key, box)
    if region is not None:
        group = PlanarROIMeasurementsAndQualitativeEvaluations(referenced_region=region, **common)
    else:
        group = MeasurementsAndQualitativeEvaluations(**common)
    return group


def not_evaluated_group(res: Any, model: ModelIdentity, tracking_uid: str):
    why = "; ".join(res.reasons) if res.reasons else res.outcome
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=tracking_uid, identifier="Exam"),
        finding_type=NEOPLASM,
        algorithm_id=_algorithm(model, None) if model.recipe and model.version else None,
        finding_sites=[FindingSite(LIVER)],
        qualitative_evaluations=[QualitativeEvaluation(FINDING, NOT_EVALUATED)],
    )
    group[0].ContentSequence.append(
        TextContentItem(name=COMMENT, value=f"Not evaluated: {res.outcome}. {why}"[:1024], relationship_type=CONTAINS)
    )
    return group


def build_sr(
    res: Any,
    model: ModelIdentity,
    evidence: list[Dataset],
    key: Dataset | None,
    box: dict | None,
    uids: dict[str, str],
) -> Dataset:
    """One SR for one exam x recipe; ``evidence[0]`` gives patient and study."""
    tracking_uid = derived_uid("tracking", uids["sr"])
    if res.outcome == "ok" and key is not None:
        group = lesion_group(res, model, key, box, tracking_uid)
        title = f"MVI {'present' if res.predicted_mvi else 'absent'} p={res.probability:.3f}"
    else:
        group = not_evaluated_group(res, model, tracking_uid)
        title = f"MVI not evaluated: {res.outcome}"
    for item in _texts(res, model):
        group[0].ContentSequence.append(item)
    report = MeasurementReport(
        observation_context=_observation_context(model),
        procedure_reported=CT_PROCEDURE,
        imaging_measurements=[group],
        title=codes.DCM.ImagingMeasurementReport,
    )
    equipment = hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=model.label or "mvi-node",
        software_versions=model.software_versions,
        contribution_description=f"{model.recipe} sha256 {model.sha256}"[:64],
    )
    equipment.DeviceUID = model.device_uid
    sr = Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=uids["sr_series"],
        series_number=9901,
        sop_instance_uid=uids["sr"],
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=("NOT FOR CLINICAL USE " if model.synthetic else "") + "MVI AI result",
        contributing_equipment=[equipment],
    )
    sr.ContentDescription = title[:64]
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    sr.CodingSchemeIdentificationSequence = [scheme]
    # Texts such as the training-data statement are not ASCII: UTF-8 (PS3.3 C.12.1.1.2)
    sr.SpecificCharacterSet = "ISO_IR 192"
    return sr
