"""Enhanced MR / Enhanced CT Image Storage: a series plan written as ONE multi-frame instance.

The hard case ``enhanced_multiframe``: modern scanners write a whole acquisition as one
Enhanced instance whose frames carry their geometry and acquisition parameters in
functional groups (PS3.3 C.7.6.16) instead of one classic file per slice. Frame i of the
instance is instance i+1 of the classic twin (same pixels, same positions), so a test
can compare both. Modules written (PS3.3 A.36.2 Enhanced MR, A.38.1 Enhanced CT):
Multi-frame Functional Groups, Multi-frame Dimension (Stack ID + In-Stack Position,
plus Temporal Position Index for a multi-phase series; one stack per repetition of the
positions, e.g. per b-value or echo), Enhanced General Equipment, Acquisition Context,
Enhanced Contrast/Bolus with per-frame Contrast/Bolus Usage, Enhanced MR Image with MR
Pulse Sequence, or Enhanced CT Image; per frame Frame Content and Plane Position, shared
Plane Orientation, Pixel Measures, Frame Anatomy, Pixel Value Transformation, Frame VOI
LUT, the MR macros (Image Frame Type, Timing, FOV/Geometry, Echo, Modifier, Imaging
Modifier, Receive/Transmit Coil, Diffusion, Averages) or the CT ones (Image Frame Type,
Acquisition Type/Details, Table Dynamics, Position, Geometry, Reconstruction, Exposure,
X-Ray Details). Output passes dciodvfy without errors.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (CTImageStorage, EnhancedCTImageStorage, EnhancedMRImageStorage, ExplicitVRLittleEndian,
                         MRImageStorage, PYDICOM_IMPLEMENTATION_UID)

from mvi_node.synth.dicomio import IMPLEMENTATION_VERSION, ExamContext, SeriesPlan, base_dataset, da, derive_uid, tm

ENHANCED_CLASS = {MRImageStorage: EnhancedMRImageStorage, CTImageStorage: EnhancedCTImageStorage}
# classic attributes never at the top level of an Enhanced instance (their content lives in
# functional groups or Enhanced modules); removed should the shared base dataset carry one
# (it sets AcquisitionDate)
_MR_CLASSIC = {"ScanningSequence", "SequenceVariant", "ScanOptions", "SequenceName", "RepetitionTime", "EchoTime",
               "FlipAngle", "EchoTrainLength", "ImagedNucleus", "NumberOfAverages", "SpacingBetweenSlices",
               "WindowCenter", "WindowWidth", "NumberOfTemporalPositions", "DiffusionBValue",
               "AcquisitionDate", "AcquisitionTime"}
_CT_CLASSIC = {"KVP", "XRayTubeCurrent", "ExposureTime", "ConvolutionKernel", "ReconstructionDiameter",
               "DataCollectionDiameter", "GantryDetectorTilt", "TableHeight", "RotationDirection", "RescaleIntercept",
               "RescaleSlope", "RescaleType", "WindowCenter", "WindowWidth", "AcquisitionDate", "AcquisitionTime"}
_CONTRAST = {"ContrastBolusAgent", "ContrastBolusRoute", "ContrastBolusVolume", "ContrastBolusStartTime",
             "ContrastFlowRate", "ContrastFlowDuration", "ContrastBolusIngredient",
             "ContrastBolusIngredientConcentration"}


def _item(**kw: Any) -> Dataset:
    ds = Dataset()
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    return _item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def _dt(t: dt.datetime) -> str:
    return da(t) + tm(t)


def frame_type(plan: SeriesPlan) -> list[str]:
    """Four-valued FrameType/ImageType (PS3.3 C.8.16.1) from the classic ImageType."""
    tokens = [str(t).upper() for t in plan.image_type]
    v1 = tokens[0] if tokens and tokens[0] in ("ORIGINAL", "DERIVED") else "ORIGINAL"
    v2 = "PRIMARY"  # the Enhanced IODs know no other value 2
    rest = tokens[2:]
    v3 = next((t for t in rest if t in ("LOCALIZER", "DIFFUSION", "ADC", "DIXON")), "VOLUME")
    if v3 == "ADC":
        v3 = "DIFFUSION"
    v4 = next((t for t in rest if t in ("ADC", "MIP", "MPR")), None)
    # a Dixon map or a subtraction says so in value 4, as Enhanced consoles write it
    # (Philips mDIXON: DIXON\WATER), so a reader of FrameType tells it from a phase
    v4 = v4 or next((_PIXEL_CONTRAST[t] for t in rest if t in _PIXEL_CONTRAST), "NONE")
    return [v1, v2, v3, v4]


#: classic ImageType tokens of Dixon maps and subtractions -> FrameType value 4
_PIXEL_CONTRAST = {"W": "WATER", "WATER": "WATER", "F": "FAT", "FAT": "FAT", "FF": "FAT_FRACTION",
                   "IN_PHASE": "IN_PHASE", "IN PHASE": "IN_PHASE", "OPP_PHASE": "OUT_PHASE", "OUT PHASE": "OUT_PHASE",
                   "SUB": "SUBTRACTION", "SUBTRACT": "SUBTRACTION", "SUBTRACTION": "SUBTRACTION"}


def _groups(plan: SeriesPlan) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-frame values (classic per-instance attributes) and the series' tags."""
    n = plan.images.shape[0]
    per = plan.per_instance or [{} for _ in range(n)]
    return per, dict(plan.tags)


def _stacks(plan: SeriesPlan, per: list[dict[str, Any]]) -> tuple[list[str], list[int], list[int] | None]:
    """StackID, InStackPositionNumber and TemporalPositionIndex of every frame."""
    tpi = [p.get("TemporalPositionIdentifier") for p in per]
    if all(t is not None for t in tpi):
        seen: dict[int, int] = {}
        pos = []
        for t in tpi:
            seen[t] = seen.get(t, 0) + 1
            pos.append(seen[t])
        return ["1"] * len(per), pos, [int(t) for t in tpi]
    # repeated positions (b-values, echoes, monitoring scans): one stack per repetition
    counts: dict[tuple, int] = {}
    stacks, in_stack = [], []
    for p in plan.positions:
        key = tuple(round(float(v), 3) for v in p)
        counts[key] = counts.get(key, 0) + 1
        stacks.append(str(counts[key]))
    numbers: dict[str, int] = {}
    for s in stacks:
        numbers[s] = numbers.get(s, 0) + 1
        in_stack.append(numbers[s])
    return stacks, in_stack, None


def _frame_times(plan: SeriesPlan, per: list[dict[str, Any]]) -> list[dt.datetime]:
    """When each frame was acquired: the classic AcquisitionTime, plus TriggerTime (GE
    multiphase keeps one AcquisitionTime and puts each phase's offset there)."""
    out = []
    for i, t in enumerate(plan.acq_times):
        trigger = per[i].get("TriggerTime")
        out.append(t + dt.timedelta(milliseconds=float(trigger)) if trigger else t)
    return out


def _contrast(ds: Dataset, tags: dict[str, Any], ct: bool) -> bool:
    """Enhanced Contrast/Bolus module (C.7.6.4b) from the classic contrast attributes."""
    agent = tags.get("ContrastBolusAgent")
    if not agent:
        return False
    item = _code("SYN-AGENT", "99SYNTH", str(agent)[:64])
    item.ContrastBolusAgentNumber = 1
    item.ContrastBolusAdministrationRouteSequence = [_code("47625008", "SCT", "Intravenous route")]
    ingredient = (_code("44588005", "SCT", "Iodine") if ct else _code("6807007", "SCT", "Gadolinium"))
    item.ContrastBolusIngredientCodeSequence = [ingredient]
    item.ContrastBolusVolume = tags.get("ContrastBolusVolume")
    item.ContrastBolusIngredientConcentration = tags.get("ContrastBolusIngredientConcentration")
    if ct:
        item.ContrastBolusIngredientOpaque = "YES"
    profile = _item(ContrastBolusVolume=tags.get("ContrastBolusVolume"))
    if tags.get("ContrastBolusStartTime"):
        profile.ContrastBolusStartTime = tags["ContrastBolusStartTime"]
    if tags.get("ContrastFlowRate"):
        profile.ContrastFlowRate = tags["ContrastFlowRate"][0]
    if tags.get("ContrastFlowDuration"):
        profile.ContrastFlowDuration = tags["ContrastFlowDuration"][0]
    item.ContrastAdministrationProfileSequence = [profile]
    ds.ContrastBolusAgentSequence = [item]
    return True


def _mr_shared(plan: SeriesPlan, tags: dict[str, Any], ftype: list[str]) -> dict[str, list[Dataset]]:
    gradient = str(tags.get("ScanningSequence", "GR")).upper() in ("GR", "EP") and \
        "SE" not in str(tags.get("ScanningSequence", "")).upper()
    rows, cols = plan.images.shape[1:]
    technique = "MAX_IP" if "MIP" in ftype else ("MPR" if "MPR" in ftype else "NONE")
    contrast = "DIFFUSION" if ftype[2] == "DIFFUSION" else (
        "T2" if float(tags.get("EchoTime", 0) or 0) >= 60 else "T1")
    groups = {
        "MRImageFrameTypeSequence": [_item(FrameType=ftype, PixelPresentation="MONOCHROME",
                                           VolumetricProperties="DISTORTED" if technique == "MAX_IP" else "VOLUME",
                                           VolumeBasedCalculationTechnique=technique,
                                           ComplexImageComponent="MAGNITUDE", AcquisitionContrast=contrast)],
        "MRTimingAndRelatedParametersSequence": [_item(
            RepetitionTime=float(tags.get("RepetitionTime", 0) or 0), FlipAngle=float(tags.get("FlipAngle", 0) or 0),
            EchoTrainLength=int(tags.get("EchoTrainLength", 1) or 1), RFEchoTrainLength=0 if gradient else 1,
            GradientEchoTrainLength=1 if gradient else 0, GradientOutputType="DB_DT", GradientOutput=0.0,
            OperatingModeSequence=[_item(OperatingModeType="STATIC FIELD", OperatingMode="IEC_NORMAL")],
            SpecificAbsorptionRateSequence=[_item(SpecificAbsorptionRateDefinition="IEC_WHOLE_BODY",
                                                  SpecificAbsorptionRateValue=0.5)])],
        "MRFOVGeometrySequence": [_item(InPlanePhaseEncodingDirection="ROW",
                                        MRAcquisitionFrequencyEncodingSteps=int(cols),
                                        MRAcquisitionPhaseEncodingStepsInPlane=int(rows),
                                        MRAcquisitionPhaseEncodingStepsOutOfPlane=int(plan.images.shape[0]),
                                        PercentSampling=100.0, PercentPhaseFieldOfView=100.0)],
        "MRModifierSequence": [_item(InversionRecovery="NO", FlowCompensation="NONE",
                                     Spoiling="RF" if gradient else "NONE", T2Preparation="NO",
                                     SpectrallySelectedExcitation="NONE", SpatialPresaturation="NONE",
                                     PartialFourier="NO", ParallelAcquisition="NO")],
        "MRImagingModifierSequence": [_item(MagnetizationTransfer="NONE", BloodSignalNulling="NO", Tagging="NONE",
                                            TransmitterFrequency=[float(tags.get("ImagingFrequency", 63.87))],
                                            PixelBandwidth=400.0)],
        "MRReceiveCoilSequence": [_item(ReceiveCoilName="BODY", ReceiveCoilManufacturerName="SYNTH",
                                        ReceiveCoilType="BODY", QuadratureReceiveCoil="YES")],
        "MRTransmitCoilSequence": [_item(TransmitCoilName="BODY", TransmitCoilManufacturerName="SYNTH",
                                         TransmitCoilType="BODY")],
        "MRAveragesSequence": [_item(NumberOfAverages=float(tags.get("NumberOfAverages", 1) or 1))],
    }
    if "EchoTime" in tags:
        groups["MREchoSequence"] = [_item(EffectiveEchoTime=float(tags["EchoTime"]))]
    groups["MRDiffusionSequence"] = [_diffusion(tags.get("DiffusionBValue"))]
    return groups


def _diffusion(b: Any) -> Dataset:
    b = float(b or 0.0)
    return _item(DiffusionBValue=b, DiffusionDirectionality="ISOTROPIC" if b > 0 else "NONE")


def _ct_shared(plan: SeriesPlan, tags: dict[str, Any], ftype: list[str]) -> dict[str, list[Dataset]]:
    technique = "MAX_IP" if "MIP" in ftype else ("MPR" if "MPR" in ftype else "NONE")
    kvp = float(tags.get("KVP", 120))
    ma = float(tags.get("XRayTubeCurrent", 200))
    ms = float(tags.get("ExposureTime", 500))
    rows = int(plan.images.shape[1])
    groups = {
        "CTImageFrameTypeSequence": [_item(FrameType=ftype, PixelPresentation="MONOCHROME",
                                           VolumetricProperties="DISTORTED" if technique == "MAX_IP" else "VOLUME",
                                           VolumeBasedCalculationTechnique=technique)],
        "CTAcquisitionTypeSequence": [_item(AcquisitionType="SPIRAL" if ftype[2] != "LOCALIZER" else "CONSTANT_ANGLE",
                                            ConstantVolumeFlag="NO", FluoroscopyFlag="NO")],
        "CTAcquisitionDetailsSequence": [_item(DataCollectionDiameter=float(tags.get("DataCollectionDiameter", 500)),
                                               GantryDetectorTilt=float(tags.get("GantryDetectorTilt", 0)),
                                               TableHeight=float(tags.get("TableHeight", 150)),
                                               RotationDirection=str(tags.get("RotationDirection", "CW")),
                                               RevolutionTime=0.5, SingleCollimationWidth=0.625,
                                               TotalCollimationWidth=40.0)],
        "CTTableDynamicsSequence": [_item(TableSpeed=80.0, TableFeedPerRotation=40.0, SpiralPitchFactor=1.0)],
        "CTGeometrySequence": [_item(DistanceSourceToDetector=1040.0, DistanceSourceToDataCollectionCenter=570.0)],
        "CTReconstructionSequence": [_item(ReconstructionAlgorithm="FILTER_BACK_PROJ",
                                           ConvolutionKernel=str(tags.get("ConvolutionKernel", "STANDARD")),
                                           ConvolutionKernelGroup="SOFT_TISSUE",
                                           ReconstructionDiameter=float(tags.get("ReconstructionDiameter", 380)),
                                           ReconstructionPixelSpacing=[float(v) for v in plan.pixel_spacing],
                                           ReconstructionAngle=360.0, ImageFilter="NONE")],
        "CTExposureSequence": [_item(ExposureTimeInms=ms, XRayTubeCurrentInmA=ma, ExposureInmAs=ma * ms / 1000.0,
                                     ExposureModulationType="NONE", CTDIvol=10.0,
                                     CTDIPhantomTypeCodeSequence=[_code("113691", "DCM",
                                                                        "IEC Body Dosimetry Phantom")])],
        "CTXRayDetailsSequence": [_item(KVP=kvp, FocalSpots=[1.2], FilterType="FLAT", FilterMaterial=["ALUMINUM"])],
        "IrradiationEventIdentificationSequence": [_item(IrradiationEventUID=derive_uid(plan.uid, "irradiation"))],
    }
    if ftype[2] == "LOCALIZER":
        groups["CTAcquisitionTypeSequence"][0].TubeAngle = 0.0
    return groups


def enhanced_dataset(ctx: ExamContext, plan: SeriesPlan) -> Dataset:
    """The multi-frame dataset of ``plan`` (pixels included)."""
    ct = plan.sop_class == CTImageStorage
    cls = ENHANCED_CLASS[plan.sop_class]
    plan.uid = plan.uid or derive_uid(ctx.spec.key(), "series", plan.name)
    ds = base_dataset(ctx, plan)
    ds.SOPClassUID = cls
    sop = derive_uid(plan.uid, "enhanced")
    ds.SOPInstanceUID = sop
    per, tags = _groups(plan)
    ftype = frame_type(plan)
    n, rows, cols = plan.images.shape
    times = _frame_times(plan, per)
    first = min(times)
    # General Series / Image Pixel / Multi-frame Functional Groups
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = da(first), tm(first)
    ds.ImageType = ftype
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    px = {"BitsAllocated": 16, "BitsStored": 16, "HighBit": 15, "PixelRepresentation": 0, **plan.pixel}
    for k, v in px.items():
        setattr(ds, k, v)
    ds.NumberOfFrames = n
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.ContentQualification = "PRODUCT"
    ds.AcquisitionNumber = int(tags.get("AcquisitionNumber", 1) or 1)
    if ftype[0] == "ORIGINAL":
        ds.AcquisitionDateTime = _dt(first)
        ds.AcquisitionDuration = max(1.0, (max(times) - first).total_seconds())
    ds.AcquisitionContextSequence = []
    for kw in ("BodyPartExamined", "PatientPosition"):
        if tags.get(kw):
            setattr(ds, kw, tags[kw])
    for kw in ("PatientPosition",):
        tags.pop(kw, None)
    contrast = _contrast(ds, tags, ct)
    if ct:
        ds.PixelPresentation = "MONOCHROME"
        ds.VolumetricProperties = "VOLUME"
        ds.VolumeBasedCalculationTechnique = "MAX_IP" if "MIP" in ftype else ("MPR" if "MPR" in ftype else "NONE")
        shared_macros = _ct_shared(plan, tags, ftype)
        slope, intercept = float(tags.get("RescaleSlope", 1) or 1), float(tags.get("RescaleIntercept", 0) or 0)
        shared_macros["PixelValueTransformationSequence"] = [_item(
            RescaleIntercept=intercept, RescaleSlope=slope, RescaleType="HU")]
    else:
        _mr_image(ds, plan, tags, ftype)
        shared_macros = _mr_shared(plan, tags, ftype)
        shared_macros["PixelValueTransformationSequence"] = [_item(RescaleIntercept=0, RescaleSlope=1,
                                                                   RescaleType="US")]
    if tags.get("WindowCenter") is not None:
        shared_macros["FrameVOILUTSequence"] = [_item(WindowCenter=tags["WindowCenter"],
                                                      WindowWidth=tags["WindowWidth"])]
    shared = Dataset()
    shared.PlaneOrientationSequence = [_item(ImageOrientationPatient=[float(v) for v in plan.orientation])]
    measures = _item(PixelSpacing=[round(float(plan.pixel_spacing[0]), 6), round(float(plan.pixel_spacing[1]), 6)],
                     SliceThickness=round(float(plan.thickness), 4))
    if tags.get("SpacingBetweenSlices"):
        measures.SpacingBetweenSlices = tags["SpacingBetweenSlices"]
    shared.PixelMeasuresSequence = [measures]
    shared.FrameAnatomySequence = [_item(AnatomicRegionSequence=[_code("818981001", "SCT", "Abdomen")],
                                         FrameLaterality="U")]
    # per-frame values that differ between frames stay per frame (echo, b-value)
    per_macros = {}
    if any("EchoTime" in p for p in per):
        shared_macros.pop("MREchoSequence", None)
        per_macros["MREchoSequence"] = lambda p: [_item(EffectiveEchoTime=float(p.get("EchoTime", tags.get("EchoTime", 0))))]
    if any("DiffusionBValue" in p for p in per):
        shared_macros.pop("MRDiffusionSequence", None)
        per_macros["MRDiffusionSequence"] = lambda p: [_diffusion(p.get("DiffusionBValue"))]
    for kw, value in shared_macros.items():
        setattr(shared, kw, value)
    stacks, in_stack, temporal = _stacks(plan, per)
    frames = []
    for i in range(n):
        fg = Dataset()
        content = _item(FrameAcquisitionNumber=int(per[i].get("AcquisitionNumber", ds.AcquisitionNumber)))
        if ftype[0] == "ORIGINAL":
            content.FrameReferenceDateTime = _dt(times[i])
            content.FrameAcquisitionDateTime = _dt(times[i])
            content.FrameAcquisitionDuration = 1000.0
        content.StackID = stacks[i]
        content.InStackPositionNumber = in_stack[i]
        values = [int(stacks[i]), in_stack[i]]
        if temporal is not None:
            content.TemporalPositionIndex = temporal[i]
            values.append(temporal[i])
        content.DimensionIndexValues = values
        fg.FrameContentSequence = [content]
        fg.PlanePositionSequence = [_item(ImagePositionPatient=[round(float(v), 4) for v in plan.positions[i]])]
        if ct:
            fg.CTPositionSequence = [_item(TablePosition=-round(float(plan.positions[i][2]), 4),
                                           ReconstructionTargetCenterPatient=[0.0, 0.0,
                                                                              round(float(plan.positions[i][2]), 4)],
                                           DataCollectionCenterPatient=[0.0, 0.0, round(float(plan.positions[i][2]), 4)])]
        for kw, make in per_macros.items():
            setattr(fg, kw, make(per[i]))
        if contrast:
            fg.ContrastBolusUsageSequence = [_item(
                ContrastBolusAgentNumber=1, ContrastBolusAgentAdministered="YES" if times[i] >= _bolus(tags, first)
                else "NO", ContrastBolusAgentDetected="NO")]
        frames.append(fg)
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = frames
    _dimensions(ds, plan, temporal is not None)
    dtype = np.int16 if px["PixelRepresentation"] else np.uint16
    ds.PixelData = np.ascontiguousarray(plan.images, dtype=dtype).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = cls
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds.file_meta = meta
    return ds


def _bolus(tags: dict[str, Any], first: dt.datetime) -> dt.datetime:
    """Injection time from ContrastBolusStartTime (TM) on the exam's day."""
    text = str(tags.get("ContrastBolusStartTime") or "")
    if len(text) < 6:
        return first
    t = dt.datetime.strptime(text[:6], "%H%M%S")
    return first.replace(hour=t.hour, minute=t.minute, second=t.second, microsecond=0)


def _mr_image(ds: Dataset, plan: SeriesPlan, tags: dict[str, Any], ftype: list[str]) -> None:
    """Enhanced MR Image and MR Pulse Sequence modules (C.8.13.1, C.8.13.4)."""
    seq = str(tags.get("ScanningSequence", "GR")).upper()
    ds.ResonantNucleus = str(tags.get("ImagedNucleus", "1H"))
    ds.KSpaceFiltering = "NONE"
    ds.MagneticFieldStrength = float(tags.get("MagneticFieldStrength", 1.5))
    ds.ApplicableSafetyStandardAgency = "IEC"
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "MAX_IP" if "MIP" in ftype else ("MPR" if "MPR" in ftype else "NONE")
    ds.ComplexImageComponent = "MAGNITUDE"
    ds.AcquisitionContrast = "DIFFUSION" if ftype[2] == "DIFFUSION" else (
        "T2" if float(tags.get("EchoTime", 0) or 0) >= 60 else "T1")
    if ftype[0] == "DERIVED":  # MR Pulse Sequence: only for ORIGINAL images (C.8.13.4)
        return
    ds.PulseSequenceName = str(tags.get("SequenceName", "") or "SYNTH")[:16]
    ds.MRAcquisitionType = str(tags.get("MRAcquisitionType", "2D") or "2D")
    ds.EchoPulseSequence = "SPIN" if seq in ("SE", "EP") else "GRADIENT"
    if ds.EchoPulseSequence == "SPIN":
        ds.MultipleSpinEcho = "YES" if seq == "SE" and int(tags.get("EchoTrainLength", 1) or 1) > 1 else "NO"
    ds.MultiPlanarExcitation = "NO"
    ds.PhaseContrast = "NO"
    ds.TimeOfFlightContrast = "NO"
    ds.SteadyStatePulseSequence = "NONE"
    ds.EchoPlanarPulseSequence = "YES" if seq == "EP" else "NO"
    ds.SaturationRecovery = "NO"
    fat = "FS" in str(tags.get("ScanOptions", "") or "").upper().replace("\\", " ").split()
    ds.SpectrallySelectedSuppression = "FAT" if fat else "NONE"
    ds.OversamplingPhase = "NONE"
    ds.GeometryOfKSpaceTraversal = "RECTILINEAR"
    ds.RectilinearPhaseEncodeReordering = "LINEAR"
    ds.SegmentedKSpaceTraversal = "SINGLE"
    if ds.MRAcquisitionType == "3D":
        ds.CoverageOfKSpace = "FULL"
    ds.NumberOfKSpaceTrajectories = 1


def _dimensions(ds: Dataset, plan: SeriesPlan, temporal: bool) -> None:
    """Multi-frame Dimension module (C.7.6.17): Stack ID, In-Stack Position [, Temporal Position Index]."""
    org = derive_uid(plan.uid, "dimension-organization")
    ds.DimensionOrganizationSequence = [_item(DimensionOrganizationUID=org)]
    pointers = [(0x00209056, "Stack ID"), (0x00209057, "In-Stack Position Number")]
    if temporal:
        pointers.append((0x00209128, "Temporal Position Index"))
    ds.DimensionOrganizationType = "3D_TEMPORAL" if temporal else "3D"
    ds.DimensionIndexSequence = [_item(DimensionOrganizationUID=org, DimensionIndexPointer=tag,
                                       FunctionalGroupPointer=0x00209111, DimensionDescriptionLabel=label)
                                 for tag, label in pointers]


def write_enhanced_series(ctx: ExamContext, plan: SeriesPlan) -> list[Path]:
    """Write ``plan`` as one Enhanced MR/CT instance (``[path]``); a plan of another
    class (secondary capture) is written classic."""
    if plan.sop_class not in ENHANCED_CLASS or not plan.plane:
        from mvi_node.synth.dicomio import write_series

        return write_series(ctx, plan)
    ds = enhanced_dataset(ctx, plan)
    for kw in (_CT_CLASSIC if plan.sop_class == CTImageStorage else _MR_CLASSIC) | _CONTRAST:
        if kw in ds:
            delattr(ds, kw)
    out_dir = ctx.series_dir(plan.number)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "I0001.dcm"
    ds.save_as(path, enforce_file_format=True)
    return [path]
