"""Clinical factors for the recipes: header values, ROI measurements and a site source.

Each recipe declares the factors it uses as a :class:`FactorSchema` (seed 000: sex,
age, maximum tumour diameter, AFP, Child-Pugh class, HBsAg, HCV). Age and sex come
from the DICOM header (PatientAge / PatientBirthDate, PatientSex: PS3.3 C.7.1.1,
C.7.2.2), measurements from the ROI, the rest from a :class:`ClinicalSource`. Today
that is a file (JSON or CSV keyed by accession number or patient ID); an HL7 or FHIR
client only has to implement ``lookup``.
"""

from mvi_node.clinical.factors import Factor, FactorSchema, FactorValues, header_factors
from mvi_node.clinical.source import ClinicalSource, FileClinicalSource, NullClinicalSource, open_source

__all__ = ["Factor", "FactorSchema", "FactorValues", "ClinicalSource", "FileClinicalSource", "NullClinicalSource",
           "header_factors", "open_source"]
