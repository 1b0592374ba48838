"""The automatic ROI: a segmentation model's label map made into lesions and a tumour ROI.

Post-processing of a background / liver / tumour label map on the target series:

- the liver is the largest connected component of liver + tumour voxels (the organ
  with its lesions); smaller than ``min_liver_ml``: "no liver found";
- lesions are the connected components (26-connected) of tumour voxels inside that
  organ, at least ``min_lesion_ml``; ranked by volume (lesion 1 the largest), each
  with its volume (mL) and maximum axial diameter (mm, largest in-plane Feret
  diameter, as a radiologist measures it on an axial slice); none: "no lesion found".

:class:`Segmentation` is what a segmentation recipe returns; :meth:`Segmentation.roi`
gives the main lesion as a :class:`~mvi_node.roi.model.Roi` with ``source``
"automatic" and the model that made it, so every recipe can use it like an annotation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import SimpleITK as sitk

from mvi_node.roi.geometry import SeriesGeometry
from mvi_node.roi.model import NoRoi, Roi

AUTOMATIC = "automatic"
NO_LIVER = "no liver found"
NO_LESION = "no lesion found"
LIVER, TUMOUR = 1, 2


@dataclass(frozen=True)
class LesionStats:
    """One lesion found automatically; ``rank`` 1 is the largest."""

    rank: int
    volume_ml: float
    max_diameter_mm: float
    slices: tuple[int, int]  # first and last slice index (inclusive) on the series grid
    voxels: int

    @property
    def tracking_id(self) -> str:
        return f"Lesion {self.rank}"

    def as_dict(self) -> dict[str, Any]:
        return {"lesion": self.rank, "tracking_id": self.tracking_id, "volume_ml": round(self.volume_ml, 2),
                "max_diameter_mm": round(self.max_diameter_mm, 1), "slices": list(self.slices)}


def voxel_ml(geometry: SeriesGeometry) -> float:
    return float(geometry.spacing_rc[0] * geometry.spacing_rc[1] * abs(geometry.slice_gap or 1.0)) / 1000.0


def _components(mask: np.ndarray) -> np.ndarray:
    """26-connected components of ``mask``, relabelled largest first (0 background)."""
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    cc = sitk.ConnectedComponent(img, True)
    return sitk.GetArrayFromImage(sitk.RelabelComponent(cc, sortByObjectSize=True)).astype(np.int32)


def slice_diameters_mm(mask: np.ndarray, spacing_rc: tuple[float, float]) -> np.ndarray:
    """In-plane Feret diameter (mm) of ``mask`` on each slice, 0 where it is absent (+ one
    pixel, so a disk of diameter d measures d)."""
    out = np.zeros(mask.shape[0], float)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.ComputeFeretDiameterOn()
    for z in np.nonzero(mask.reshape(mask.shape[0], -1).any(1))[0]:
        img = sitk.GetImageFromArray(mask[z].astype(np.uint8))
        img.SetSpacing((float(spacing_rc[1]), float(spacing_rc[0])))
        stats.Execute(img)
        out[z] = stats.GetFeretDiameter(1) + float(min(spacing_rc))
    return out


def axial_diameter_mm(mask: np.ndarray, spacing_rc: tuple[float, float]) -> float:
    """Largest in-plane Feret diameter over the slices (see :func:`slice_diameters_mm`)."""
    return float(slice_diameters_mm(mask, spacing_rc).max(initial=0.0))


def postprocess(labels: np.ndarray, geometry: SeriesGeometry, min_lesion_ml: float = 0.2,
                min_liver_ml: float = 100.0) -> tuple[np.ndarray, np.ndarray, list[LesionStats], list[str]]:
    """(liver mask, lesion map (0 none, k = lesion rank k), lesions, reasons) of a label map."""
    ml = voxel_ml(geometry)
    organ_cc = _components((labels == LIVER) | (labels == TUMOUR))
    organ = organ_cc == 1
    liver_ml = float(organ.sum()) * ml
    if liver_ml < min_liver_ml:
        empty = np.zeros(labels.shape, bool)
        return empty, np.zeros(labels.shape, np.uint16), [], [
            f"{NO_LIVER} (largest liver component {liver_ml:.0f} mL, at least {min_liver_ml:.0f} mL needed)"]
    tumour_cc = _components((labels == TUMOUR) & organ)
    lesion_map = np.zeros(labels.shape, np.uint16)
    lesions: list[LesionStats] = []
    n = int(tumour_cc.max())
    if n:
        counts = np.bincount(tumour_cc.ravel(), minlength=n + 1)
        for k in range(1, n + 1):  # already largest first
            if counts[k] * ml < min_lesion_ml:
                break
            m = tumour_cc == k
            zs = np.nonzero(m.reshape(m.shape[0], -1).any(1))[0]
            rank = len(lesions) + 1
            lesion_map[m] = rank
            lesions.append(LesionStats(rank, float(counts[k]) * ml, axial_diameter_mm(m, geometry.spacing_rc),
                                       (int(zs[0]), int(zs[-1])), int(counts[k])))
    liver = organ & (lesion_map == 0)
    reasons = [] if lesions else [f"{NO_LESION} in the liver ({liver_ml:.0f} mL; lesions of at least "
                                  f"{min_lesion_ml:g} mL are reported)"]
    return liver, lesion_map, lesions, reasons


@dataclass
class Segmentation:
    """A segmentation model's result on one series (the target's sorted geometry).

    ``model``: the model's identity (recipe, model_version, sha256, ...); ``info``: how it
    ran (spacing, patch, tiles, seconds); ``reasons``: why no ROI (no liver, no lesion).
    """

    geometry: SeriesGeometry
    liver: np.ndarray  # bool (slices, rows, cols)
    lesion_map: np.ndarray  # uint16, 0 none, k = lesion rank k
    lesions: list[LesionStats]
    model: Mapping[str, Any]
    info: Mapping[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``liver_tumor_seg 0.1.0``: how ``roi_source`` names the model."""
        return f"{self.model.get('recipe', '')} {self.model.get('model_version', '')}".strip()

    @property
    def source(self) -> str:
        return f"{AUTOMATIC}: {self.label}"

    @property
    def series_uid(self) -> str:
        return str(self.geometry.datasets[0].SeriesInstanceUID)

    @property
    def found(self) -> bool:
        return bool(self.lesions) and bool(self.liver.any())

    def label_map(self) -> np.ndarray:
        """0 background, 1 liver, 2 any lesion (uint8)."""
        out = self.liver.astype(np.uint8)
        out[self.lesion_map > 0] = TUMOUR
        return out

    def roi(self) -> Roi | NoRoi:
        """The main (largest) lesion as an ROI, or why there is none."""
        if not self.found:
            return NoRoi([f"{self.source}: {r}" for r in (self.reasons or [NO_LESION])])
        notes = [f"{len(self.lesions)} lesion(s) found; the largest is the ROI"]
        return Roi(self.lesion_map == 1, self.geometry, AUTOMATIC, "", "mask", False, notes,
                   model=dict(self.model), lesions=[l.as_dict() for l in self.lesions],
                   liver=self.liver | (self.lesion_map > 0))

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "series_instance_uid": self.series_uid,
                "liver_ml": round(float(self.liver.sum() + (self.lesion_map > 0).sum()) * voxel_ml(self.geometry), 1),
                "lesions": [l.as_dict() for l in self.lesions], "reasons": list(self.reasons),
                "model": dict(self.model), "info": dict(self.info)}
