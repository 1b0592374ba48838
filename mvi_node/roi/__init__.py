"""Tumour ROI for a target series, from whatever annotation the exam carries.

``find_roi(exam, target)`` tries the sources in order (SEG, RTSTRUCT, TID 1500 SR,
GSPS; first found wins), brings the annotation onto the target series through patient
coordinates, keeps the main tumour (largest connected component) and returns a
:class:`Roi` or a :class:`NoRoi` whose outcome "no tumour ROI" the job must report.

The ROI order every recipe uses: an annotation in the exam first, else the automatic
segmentation: ``find_roi(exam, target, automatic=inputs.auto_roi)`` (the engine fills
``ExamInputs.auto_roi`` when a segmentation model is served; :mod:`.automatic`).
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

from pydicom.dataset import Dataset

from mvi_node.common.frames import view_key

from mvi_node.roi.geometry import SeriesGeometry, series_geometry
from mvi_node.roi.model import NO_ROI, NoRoi, Roi, largest_component
from mvi_node.roi.sources import DEFAULT_SOURCES, RoiSource

__all__ = ["NO_ROI", "AutomaticRoi", "NoRoi", "Roi", "RoiSource", "SeriesGeometry", "find_roi", "series_geometry"]

#: the automatic ROI of a series: the engine's segmentation service (``ExamInputs.auto_roi``)
AutomaticRoi = Callable[[SeriesGeometry], "Roi | NoRoi"]


def find_roi(exam: Iterable[Dataset], target: Sequence[Dataset] | SeriesGeometry,
             sources: Sequence[RoiSource] = DEFAULT_SOURCES, automatic: AutomaticRoi | None = None) -> Roi | NoRoi:
    """First tumour ROI any source finds on ``target`` (datasets of the series, or its geometry);
    when none does and ``automatic`` is given, the automatic segmentation's main lesion.

    ``exam``: every dataset (headers are enough; annotation objects are re-read in full
    from ``ds.filename``) of the exam, all its studies: phases are often separate series
    or even separate studies. Exceptions inside a source become reasons, never crashes.
    """
    geo = target if isinstance(target, SeriesGeometry) else series_geometry(list(target))
    exam = list(exam)
    # by image key: a frame of an Enhanced instance is "<SOP>#<frame>" (common.frames)
    images = {view_key(ds): ds for ds in exam if "ImagePositionPatient" in ds}
    images.update({uid: geo.datasets[i] for uid, i in geo.sop_index.items()})
    reasons = []
    for source in sources:
        objects = [ds for ds in exam if str(ds.get("Modality", "")) == getattr(source, "modality", "")]
        if not objects:
            reasons.append(f"{source.name}: none in the exam")
            continue
        try:
            found = source.find(objects, geo, images)
        except Exception as exc:  # noqa: BLE001 - a broken annotation must not end the job silently
            found = f"{source.name}: unreadable ({type(exc).__name__}: {exc})"
        if isinstance(found, Roi):
            found.mask = largest_component(found.mask)
            return found
        reasons.append(f"{source.name}: {found}")
    if automatic is not None:
        try:
            auto = automatic(geo)
        except Exception as exc:  # noqa: BLE001 - the job reports it, never crashes
            auto = NoRoi([f"automatic: failed ({type(exc).__name__})"])
        if isinstance(auto, Roi):
            return auto
        reasons += list(auto.reasons)
    return NoRoi(reasons)
