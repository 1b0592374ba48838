"""The automatic segmentation as a DICOM Segmentation (PS3.3 A.51), built with highdicom.

One SEG per exam x segmentation model, in the source study, referencing every image of
the segmented series (Referenced Series Sequence, and per frame the source image in the
Derivation Image Sequence). Segments: 1 "Liver" (the parenchyma without its lesions),
then one "Lesion k" per lesion, ranked by volume, each with its tracking identifier and
UID (the SR's measurement group of the same lesion carries the same UID). Every segment
is AUTOMATIC with algorithm identification naming the model, its version and sha256.

UIDs derive from the study, the source series, the model's sha256 and the result
version, so a retried job writes the same SEG and a superseding version a new one.
Only a segmentation that found a liver and at least one lesion becomes a SEG: an empty
one is never sent.
"""

from __future__ import annotations

from typing import Any

import highdicom as hd
import numpy as np
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from mvi_node.common.frames import cite_source_frames, seg_source_arguments
from mvi_node.report.inputs import MANUFACTURER
from mvi_node.report.uids import derived_uid

SEG_SERIES_NUMBER = 9903
LIVER = CodedConcept("10200004", "SCT", "Liver")
ORGAN = CodedConcept("123037004", "SCT", "Anatomical Structure")
ABNORMAL = CodedConcept("49755003", "SCT", "Morphologically Altered Structure")
NEOPLASM = CodedConcept("108369006", "SCT", "Neoplasm")


class SegUIDs:
    """UIDs of the SEG of one segmentation (exam series x model x result version)."""

    def __init__(self, segmentation: Any, version: int = 1) -> None:
        geo = segmentation.geometry
        ds0 = geo.datasets[0]
        key = (str(ds0.StudyInstanceUID), str(ds0.SeriesInstanceUID), str(segmentation.model.get("recipe", "")),
               str(segmentation.model.get("sha256", "") or "no-model"))
        self.key = key + ((f"v{version}",) if version > 1 else ())

    @property
    def series(self) -> str:
        return derived_uid("seg-series", *self.key)

    @property
    def sop(self) -> str:
        return derived_uid("seg", *self.key)

    def tracking(self, rank: int) -> str:
        """Tracking UID of lesion ``rank`` (shared by the SEG segment and the SR group)."""
        return derived_uid("seg-tracking", *self.key, str(rank))

    @property
    def liver_tracking(self) -> str:
        return derived_uid("seg-tracking", *self.key, "liver")


def _algorithm(model: dict[str, Any]) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name=str(model.get("recipe") or "segmentation")[:64], family=codes.cid7162.ArtificialIntelligence,
        version=str(model.get("model_version") or "0")[:64], source=MANUFACTURER,
        parameters={"sha256": str(model.get("sha256") or "none"), "variant": str(model.get("variant") or ""),
                    **({"precision": str(model["precision"])} if model.get("precision") not in (None, "", "fp32")
                       else {})},
    )


def _synthetic(model: dict[str, Any]) -> bool:
    return "synthetic" in (str(model.get("training_data", "")) + " " + str(model.get("intended_use", ""))).lower()


def build_seg(segmentation: Any, version: int = 1) -> Dataset:
    """The SEG of a :class:`~mvi_node.roi.automatic.Segmentation` that found a liver and lesions."""
    if not segmentation.found:
        raise ValueError("no SEG for a segmentation without liver and lesions")
    from mvi_node import __version__

    uids = SegUIDs(segmentation, version)
    model = dict(segmentation.model)
    algo = _algorithm(model)
    sources = list(segmentation.geometry.datasets)  # headers are enough: highdicom reads attributes
    labels = np.zeros(segmentation.lesion_map.shape, np.uint16)
    labels[segmentation.liver] = 1
    m = segmentation.lesion_map > 0
    labels[m] = segmentation.lesion_map[m].astype(np.uint16) + 1
    descriptions = [hd.seg.SegmentDescription(
        segment_number=1, segment_label="Liver", segmented_property_category=ORGAN, segmented_property_type=LIVER,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algo,
        tracking_uid=uids.liver_tracking, tracking_id="Liver")]
    for lesion in segmentation.lesions:
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=lesion.rank + 1, segment_label=f"Lesion {lesion.rank} ({lesion.volume_ml:.1f} mL)"[:64],
            segmented_property_category=ABNORMAL, segmented_property_type=NEOPLASM,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algo,
            tracking_uid=uids.tracking(lesion.rank), tracking_id=lesion.tracking_id))
    dtype = np.uint8 if labels.max() < 256 else np.uint16
    label = f"{model.get('recipe', '')} {model.get('model_version', '')}".strip()
    caution = "NOT FOR CLINICAL USE " if _synthetic(model) else ""
    seg = hd.seg.Segmentation(
        **seg_source_arguments(sources, labels.astype(dtype)),  # frames of an Enhanced series: its instance
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=uids.series,
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=uids.sop,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=(label or "mvi-node")[:64],
        software_versions=[f"mvi-node {__version__}", label or "no model"],
        device_serial_number=str(model.get("sha256", "") or "none")[:16],
        series_description=(caution + "Liver/tumour AI SEG")[:64],
        content_label="AUTOSEG",
        content_description=(f"Automatic liver and tumour segmentation by {label}"
                             + (" - NOT FOR CLINICAL USE" if caution else ""))[:64],
        content_creator_name="mvi-node^automatic",
    )
    cite_source_frames(seg, sources)
    return seg


def roi_note(segmentation: Any, seg_uid: str) -> str:
    """What the SR says about an automatic ROI."""
    main = segmentation.lesions[0]
    sha = str(segmentation.model.get("sha256", "") or "none")
    return (f"ROI source: {segmentation.source} (automatic segmentation, sha256 {sha[:16]}): the largest of "
            f"{len(segmentation.lesions)} lesion(s) found ({main.volume_ml:.1f} mL, {main.max_diameter_mm:.1f} mm); "
            f"outlines in DICOM SEG {seg_uid}")
