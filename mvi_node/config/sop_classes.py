"""Storage SOP classes and transfer syntaxes the listener accepts by default.

Images the recipes read (CT and MR, classic and Enhanced), the objects that carry a
tumour ROI (Segmentation, RT Structure Set, SR, Grayscale Softcopy Presentation State)
and every SR class (PS3.4 Annex B.5), so dose reports and prior results do not make
the routing rule fail. Anything else is refused unless a site adds it.
"""

from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    RLELossless,
)
from pydicom.uid import UID_dictionary  # type: ignore[attr-defined]

_IMAGES = [
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.3",  # Enhanced MR Color Image Storage
    "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image Storage
]
_ROI_CARRIERS = [
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set Storage
    "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State Storage
]


def _sr_classes() -> list[str]:
    found = []
    for uid, entry in UID_dictionary.items():
        name, kind = entry[0], entry[1]
        if kind == "SOP Class" and (name.endswith("SR Storage") or name == "Key Object Selection Document Storage"):
            if "Retired" not in entry[4]:
                found.append(uid)
    return sorted(found)


DEFAULT_SOP_CLASSES: tuple[str, ...] = tuple(_IMAGES + _ROI_CARRIERS + _sr_classes())

DEFAULT_TRANSFER_SYNTAXES: tuple[str, ...] = (
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)


def sop_class_name(uid: str) -> str:
    """Readable name for logs; falls back to the UID."""
    return UID(uid).name or uid
