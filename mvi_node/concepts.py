"""Every coded concept the node's results use, in one place.

Plain ``(value, scheme, meaning)`` triples so that recipes can name their endpoint and
findings without importing the report stage; the report turns them into highdicom
``CodedConcept`` items. Concepts the standard has no code for use the private scheme
``99MVINODE``, which every SR declares in its Coding Scheme Identification Sequence
(PS3.3 C.12.1.1.3.1). References: DCM = PS3.16 Annex D, SCT = SNOMED CT, LN = LOINC,
UCUM units (PS3.16 Annex C).
"""

from __future__ import annotations

from typing import NamedTuple

#: private coding scheme for concepts the standard has no code for (declared in the SR)
SCHEME = "99MVINODE"
SCHEME_NAME = "mvi-node private concepts"


class Code(NamedTuple):
    value: str
    scheme: str
    meaning: str


# -- results and their context (TID 1500 / TID 1501 / TID 4019) ------------------------
MVI_PROBABILITY = Code("MVI-P", SCHEME, "Microvascular invasion probability")
NOT_EVALUATED = Code("MVI-NE", SCHEME, "Microvascular invasion not evaluated")
#: seed 001's nomogram (AFP + the deep-learning MVI decision), a second probability
NOMOGRAM_PROBABILITY = Code("MVI-NOMO", SCHEME, "MVI nomogram probability")
MTD = Code("M-MTD", SCHEME, "Maximum tumor diameter")
CLINICAL_FACTOR = Code("M-CF", SCHEME, "Clinical factor used")
INTENDED_USE = Code("M-IU", SCHEME, "Intended use")
THRESHOLD = Code("122411", "DCM", "Threshold Value")
FINDING = Code("121071", "DCM", "Finding")
COMMENT = Code("121106", "DCM", "Comment")

# -- findings and sites ----------------------------------------------------------------
INVASION_PRESENT = Code("372287009", "SCT", "Vascular invasion by tumor present")
INVASION_ABSENT = Code("127494000", "SCT", "No vascular invasion by tumor")
NEOPLASM = Code("108369006", "SCT", "Neoplasm")
LIVER = Code("10200004", "SCT", "Liver")

# -- procedure reported (TID 1500 row 4), by the exam's modality ------------------------
CT_PROCEDURE = Code("25045-6", "LN", "CT unspecified body region")
MR_PROCEDURE = Code("25056-3", "LN", "MRI unspecified body region")
PROCEDURE_BY_MODALITY = {"CT": CT_PROCEDURE, "MR": MR_PROCEDURE}

# -- units -------------------------------------------------------------------------------
UNITLESS = Code("1", "UCUM", "no units")
MM = Code("mm", "UCUM", "mm")
ML = Code("ml", "UCUM", "mL")
VOLUME = Code("118565006", "SCT", "Volume")


def class_probability(label: str) -> Code:
    """Probability of one class of a multi-class endpoint (e.g. MVI grade M0/M1/M2)."""
    return Code(f"MVI-{label}"[:16], SCHEME, f"Probability of MVI grade {label}")


def procedure_for(modalities: set[str] | frozenset[str]) -> Code:
    """The procedure concept of an exam: MR when it is an MR exam, else CT."""
    return MR_PROCEDURE if "MR" in modalities and "CT" not in modalities else CT_PROCEDURE
