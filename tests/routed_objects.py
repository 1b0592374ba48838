"""What PACS auto-routing sends besides the images: a screen capture, a dose report, a PDF."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SC = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"  # X-Ray Radiation Dose SR Storage
PDF = "1.2.840.10008.5.1.4.1.1.104.1"  # Encapsulated PDF Storage


def _save(ds: Dataset, sop_class: str, path: Path) -> Path:
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _study_part(ct: Path) -> Dataset:
    src = dcmread(ct, stop_before_pixels=True)
    ds = Dataset()
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
                    "StudyID"):
        if keyword in src:
            setattr(ds, keyword, getattr(src, keyword))
    ds.SeriesNumber = 900
    ds.InstanceNumber = 1
    return ds


def routed_extras(ct: Path, out: Path) -> dict[str, Path]:
    """A screen capture of ``ct``, a CT dose report and a PDF, in ``ct``'s study."""
    sc = dcmread(ct)
    sc.Modality = "OT"
    sc.ConversionType = "WSD"
    sc.SeriesDescription = "Dose Report screen save"
    sc.SeriesInstanceUID = generate_uid()
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "SliceLocation", "FrameOfReferenceUID"):
        if keyword in sc:
            delattr(sc, keyword)
    files = {"sc": _save(sc, SC, out / "sc" / "sc.dcm")}

    dose = _study_part(ct)
    dose.Modality = "SR"
    dose.ValueType = "CONTAINER"
    dose.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "10011"
    dose.ContentTemplateSequence = Sequence([template])
    concept = Dataset()
    concept.CodeValue = "113701"
    concept.CodingSchemeDesignator = "DCM"
    concept.CodeMeaning = "X-Ray Radiation Dose Report"
    dose.ConceptNameCodeSequence = Sequence([concept])
    dose.CompletionFlag = "COMPLETE"
    dose.VerificationFlag = "UNVERIFIED"
    files["dose"] = _save(dose, DOSE_SR, out / "dose" / "dose.dcm")

    pdf = _study_part(ct)
    pdf.Modality = "DOC"
    pdf.MIMETypeOfEncapsulatedDocument = "application/pdf"
    pdf.DocumentTitle = "Referral"
    pdf.BurnedInAnnotation = "YES"
    pdf.EncapsulatedDocument = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    files["pdf"] = _save(pdf, PDF, out / "pdf" / "doc.dcm")
    return files
