"""Storage SOP classes and transfer syntaxes the listener accepts by default.

PACS auto-routing sends the whole study: dose reports, screen captures, PDFs and
presentation states come with the images. By default the listener therefore accepts
every storage SOP class (``ALL_STORAGE_SOP_CLASSES``), so a routed study never fails at
the PACS; a site may restrict the list (``[listener] sop_classes``).

``USED_SOP_CLASSES`` are the classes a recipe can read: images (CT and MR, classic and
Enhanced), the objects that carry a tumour ROI (Segmentation, RT Structure Set,
Grayscale Softcopy Presentation State) and the SR classes that may hold measurements.
Everything else (dose SRs, Secondary Capture, PDFs, key object selections, other
presentation states ...) is "unused": stored and ignored by selection, or acknowledged
and discarded, as ``[listener] unused_sop_classes`` says.
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
    """Every current SR class except the dose reports (which never carry an ROI)."""
    found = []
    for uid, entry in UID_dictionary.items():
        name, kind = entry[0], entry[1]
        if kind == "SOP Class" and name.endswith("SR Storage") and "Dose" not in name:
            if "Retired" not in entry[4]:
                found.append(uid)
    return sorted(found)


def _all_storage() -> list[str]:
    from pynetdicom import AllStoragePresentationContexts

    return sorted({str(cx.abstract_syntax) for cx in AllStoragePresentationContexts} | set(USED_SOP_CLASSES))


#: what a recipe can read; everything else is handled as ``unused_sop_classes`` says
USED_SOP_CLASSES: frozenset[str] = frozenset(_IMAGES + _ROI_CARRIERS + _sr_classes())
#: every storage SOP class pynetdicom knows (the default of ``[listener] sop_classes``)
ALL_STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(_all_storage())

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
