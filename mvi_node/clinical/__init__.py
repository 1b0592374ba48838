"""Clinical factors for the recipes: header values, ROI measurements and a site source.

Seed 000 uses sex, age, max tumour diameter (MTD), AFP, Child-Pugh class, HBsAg and
HCV. Age and sex come from the DICOM header (PatientAge / PatientBirthDate,
PatientSex: PS3.3 C.7.1.1, C.7.2.2), MTD from the ROI, the rest from a
:class:`ClinicalSource`. Today that is a file (JSON or CSV keyed by accession number or
patient ID); an HL7 or FHIR client only has to implement ``lookup``.
"""

from mvi_node.clinical.factors import FACTORS, ClinicalFactors, header_factors
from mvi_node.clinical.source import ClinicalSource, FileClinicalSource, NullClinicalSource, open_source

__all__ = ["FACTORS", "ClinicalFactors", "ClinicalSource", "FileClinicalSource", "NullClinicalSource",
           "header_factors", "open_source"]
