"""The rejection note that withdraws a superseded result: a Key Object Selection
Document (PS3.3 A.35.4) whose title is (113001, DCM, "Rejected for Quality Reasons")
from CID 7010, listing every instance of the previous version (IHE IOCM). PACS that
support IOCM hide those instances; the others show the note beside the new result.
"""

from __future__ import annotations

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from mvi_node.report.inputs import MANUFACTURER
from mvi_node.report.uids import derived_uid

KOS_SERIES_NUMBER = 9903


def rejection_note(rejected: list[Dataset], new_sr_uid: str, reason: str) -> Dataset:
    """A KOS in the source study rejecting ``rejected`` (the earlier SR and captures);
    its UIDs derive from the SR that replaces them, so a retry makes the same note."""
    if not rejected:
        raise ValueError("a rejection note needs the instances it rejects")
    content = hd.ko.KeyObjectSelection(
        document_title=codes.DCM.RejectedForQualityReasons,
        referenced_objects=rejected,
        description=reason[:1024],
    )
    kos = hd.ko.KeyObjectSelectionDocument(
        evidence=rejected,
        content=content,
        series_instance_uid=derived_uid("kos-series", new_sr_uid),
        series_number=KOS_SERIES_NUMBER,
        sop_instance_uid=derived_uid("kos", new_sr_uid),
        instance_number=1,
        manufacturer=MANUFACTURER,
    )
    kos.SeriesDescription = "MVI result superseded"
    return kos
