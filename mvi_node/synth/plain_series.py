"""A plain CT series (body-shaped noise, valid headers) for ingest tests and benchmarks.

Fast to make and byte-deterministic for a seed; the liver phantoms with lesions used to
train and test models live beside it in this package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid


def _uid(seed: str) -> str:
    # Derived (not random) UIDs keep a seed's files byte-identical between runs.
    return generate_uid(prefix="2.25.", entropy_srcs=[seed])


def plain_ct_series(
    out_dir: Path,
    slices: int = 300,
    matrix: int = 512,
    seed: int = 0,
    patient_name: str = "PLAIN^PHANTOM",
    patient_id: str = "PHANTOM-0",
    study_uid: str | None = None,
) -> list[Path]:
    """Write ``slices`` CT images of one series to ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study_uid = study_uid or _uid(f"study-{seed}-{patient_id}")
    series_uid = _uid(f"series-{seed}-{study_uid}")
    frame_uid = _uid(f"frame-{seed}-{study_uid}")
    yy, xx = np.mgrid[:matrix, :matrix]
    body = ((yy - matrix / 2) / (matrix * 0.36)) ** 2 + ((xx - matrix / 2) / (matrix * 0.45)) ** 2 < 1
    base = np.where(body, 40, -1000).astype(np.int16)  # soft tissue in air, HU
    paths = []
    for i in range(slices):
        pixels = (base + rng.normal(0, 12, base.shape).astype(np.int16) * body).astype(np.int16) + 1024
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = _uid(f"sop-{series_uid}-{i}")
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyDate = "20260101"
        ds.StudyTime = "120000"
        ds.AccessionNumber = f"ACC{seed:06d}"
        ds.Modality = "CT"
        ds.Manufacturer = "mvi-node synthetic"
        ds.ReferringPhysicianName = ""
        ds.SeriesDescription = "ABDOMEN 5mm"
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19600101"
        ds.PatientSex = "M"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 3
        ds.InstanceNumber = i + 1
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [-matrix * 0.35, -matrix * 0.35, -5.0 * i]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 5.0
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.KVP = 120
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = matrix
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        ds.PixelData = np.clip(pixels, 0, 4095).astype(np.uint16).tobytes()
        path = out_dir / f"CT{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
