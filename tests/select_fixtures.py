"""Header-only datasets for tests of the selection engine (no pixel data)."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
AXIAL = [1, 0, 0, 0, 1, 0]
CORONAL = [1, 0, 0, 0, 0, -1]


def hms(seconds: float) -> str:
    """Seconds of the day -> DICOM TM."""
    seconds = seconds % 86400
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{int(h):02d}{int(m):02d}{s:09.6f}"


class Exam:
    """Builds series of one exam; ``series(...)`` returns the datasets it made."""

    def __init__(self, patient: str = "P1", accession: str = "A1", study_uid: str | None = None, modality: str = "CT"):
        self.patient = patient
        self.accession = accession
        self.study_uid = study_uid or generate_uid()
        self.frame_uid = generate_uid()
        self.modality = modality
        self.number = 0
        self.datasets: list[Dataset] = []

    def series(
        self,
        description: str = "",
        time: float | None = 36000.0,
        slices: int = 4,
        thickness: float = 5.0,
        orientation: list[float] | None = None,
        study_uid: str | None = None,
        phases: int = 1,
        phase_by: str = "TemporalPositionIdentifier",
        phase_gap: float = 20.0,
        **attrs: Any,
    ) -> list[Dataset]:
        """``slices`` instances (times ``time`` + 0.5 s per slice); extra attrs by keyword."""
        self.number += 1
        series_uid = generate_uid()
        sop_class = attrs.pop("SOPClassUID", None) or (CT_IMAGE if self.modality == "CT" else MR_IMAGE)
        made = []
        for p in range(phases):
            for i in range(slices):
                ds = Dataset()
                ds.SOPClassUID = sop_class
                ds.SOPInstanceUID = generate_uid()
                ds.Modality = self.modality
                ds.PatientID = self.patient
                ds.AccessionNumber = self.accession
                ds.StudyInstanceUID = study_uid or self.study_uid
                ds.SeriesInstanceUID = series_uid
                ds.FrameOfReferenceUID = self.frame_uid
                ds.SeriesNumber = self.number
                ds.InstanceNumber = p * slices + i + 1
                ds.SeriesDescription = description
                ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
                ds.ImageOrientationPatient = orientation or AXIAL
                ds.ImagePositionPatient = [0.0, 0.0, -thickness * i]
                ds.SliceThickness = thickness
                ds.Rows = ds.Columns = 64
                if time is not None:
                    t = time + p * phase_gap
                    ds.AcquisitionTime = hms(t + 0.5 * i)
                    ds.SeriesTime = hms(time)
                if phases > 1:
                    if phase_by == "TemporalPositionIdentifier":
                        ds.TemporalPositionIdentifier = p + 1
                        ds.NumberOfTemporalPositions = phases
                    elif phase_by == "TriggerTime":
                        ds.TriggerTime = p * phase_gap * 1000.0
                        ds.AcquisitionTime = hms(time)
                for k, v in attrs.items():
                    setattr(ds, k, v)
                made.append(ds)
        self.datasets += made
        return made


def t1_gre(**extra: Any) -> dict[str, Any]:
    """Parameters of a fat-suppressed 3D T1 gradient echo (VIBE/LAVA/THRIVE)."""
    base = dict(
        RepetitionTime=4.0,
        EchoTime=1.9,
        FlipAngle=12,
        ScanningSequence="GR",
        SequenceVariant=["SP", "SK"],
        ScanOptions="FS",
        MRAcquisitionType="3D",
    )
    base.update(extra)
    return base


from mvi_node.select.recipes import RecipeNeeds  # noqa: E402

#: what seed 000's and seed 001's recipes need, as their recipe classes declare it; selection
#: is judged against these (the node passes the served recipes' needs the same way)
SEED_NEEDS = (
    RecipeNeeds("ct_ap_resnet18", ("ct_arterial",), modalities=frozenset({"CT"})),
    RecipeNeeds("mr_3seq_grade", ("mr_t1_pre", "mr_portal_venous", "mr_transitional"), modalities=frozenset({"MR"})),
)
