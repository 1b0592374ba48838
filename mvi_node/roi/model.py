"""What an ROI source returns: a tumour mask on the target series, or why there is none."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from mvi_node.roi.geometry import SeriesGeometry

NO_ROI = "no tumour ROI"


@dataclass
class Roi:
    """Tumour mask (slices, rows, cols) on ``geometry`` (the target series, sorted).

    ``kind`` "mask" for outlines (SEG, RTSTRUCT, polygons: tight around the tumour) or
    "circle" for circles/ellipses (seed 000 draws them ~1 cm wider than the tumour).
    """

    mask: np.ndarray
    geometry: SeriesGeometry
    source: str  # "seg" | "rtstruct" | "sr" | "gsps"
    source_uid: str  # SOP Instance UID of the annotation object
    kind: str = "mask"
    mapped: bool = False  # drawn on another series and brought over through patient coordinates
    notes: list[str] = field(default_factory=list)
    #: source "automatic": the segmentation model's identity and every lesion it found
    model: dict | None = None
    lesions: list[dict] = field(default_factory=list)
    #: the liver on the same grid, when the exam outlines it as an organ (crop limits, seed 003's ring)
    liver: np.ndarray | None = None

    @property
    def slices(self) -> list[int]:
        return [int(z) for z in np.nonzero(self.mask.reshape(self.mask.shape[0], -1).any(1))[0]]

    @property
    def automatic(self) -> bool:
        return self.model is not None

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"source": self.source, "source_uid": self.source_uid, "kind": self.kind,
                                  "mapped_from_other_series": self.mapped, "slices": len(self.slices),
                                  "notes": self.notes}
        if self.model is not None:  # "automatic: liver_tumor_seg 0.1.0"
            label = f"{self.model.get('recipe', '')} {self.model.get('model_version', '')}".strip()
            out["source"] = f"{self.source}: {label}"
            out["model"] = {k: self.model.get(k) for k in ("recipe", "model_version", "sha256")}
            out["lesions"] = self.lesions
        return out


@dataclass
class NoRoi:
    """No usable tumour annotation; ``reasons`` lists what each source found."""

    reasons: list[str] = field(default_factory=list)
    outcome: str = NO_ROI

    def describe(self) -> dict[str, object]:
        return {"outcome": self.outcome, "reasons": self.reasons}


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 3D connected component: the main tumour when several are outlined."""
    if not mask.any():
        return mask.astype(bool)
    # Labelled inside the outline's bounding box only, where every component lies: the
    # work follows the tumour's size, not the series' (a 40 x 512 x 512 series took 0.2 s
    # whole). Scan order within the box is the full volume's, so ties resolve the same.
    box = _bounding_box(mask)
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(sitk.GetImageFromArray(mask[box].astype(np.uint8))),
                               sortByObjectSize=True)
    out = np.zeros(mask.shape, bool)
    out[box] = sitk.GetArrayFromImage(cc) == 1
    return out


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)
