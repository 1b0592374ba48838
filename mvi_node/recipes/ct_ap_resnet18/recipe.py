"""ct_ap_resnet18 as the engine sees it: roles, inputs, clinical encoding. Torch-free.

Seed 000 (Liu et al. 2021): CT late arterial phase, per-slice ResNet-18 probability,
patient decision = max over tumour slices, threshold from Youden's J.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from mvi_node.clinical import ClinicalFactors, ClinicalSource, header_factors
from mvi_node.metrics import observe_stage
from mvi_node.recipes.ct_ap_resnet18 import preprocess as pp
from mvi_node.roi import NoRoi, Roi, find_roi

NAME = "ct_ap_resnet18"
ROLE = "ct_arterial"
VARIANTS = ("clinical", "image_only")
IMAGE_SHAPE = ("N", pp.CHANNELS, pp.SIZE, pp.SIZE)
CLINICAL_SHAPE = ("N", 9)

# clinical vector: fixed scale so the FC sees O(1) values (documented in the manifest)
CLINICAL_ENCODING = {
    "sex": "1 male, 0 female",
    "age": "years / 100",
    "mtd_mm": "mm / 100",
    "afp_ng_ml": "log10(1 + ng/mL) / 5",
    "child_pugh": "one-hot A, B, C (3 units)",
    "hbsag": "1 positive, 0 negative",
    "hcv": "1 positive, 0 negative",
}


def clinical_vector(f: ClinicalFactors) -> np.ndarray:
    """(9,) float32; raises ValueError when a factor is missing."""
    if not f.complete():
        raise ValueError(f"missing clinical factors: {f.missing()}")
    cp = [1.0 if f.child_pugh == c else 0.0 for c in "ABC"]
    return np.asarray([
        1.0 if f.sex == "M" else 0.0,
        float(f.age) / 100.0,
        float(f.mtd_mm) / 100.0,
        math.log10(1.0 + max(float(f.afp_ng_ml), 0.0)) / 5.0,
        *cp,
        1.0 if f.hbsag else 0.0,
        1.0 if f.hcv else 0.0,
    ], dtype=np.float32)


def preprocessing_constants() -> dict[str, object]:
    """What the manifest records so a site can check its inputs match."""
    return {
        "window_level": pp.WINDOW_LEVEL, "window_width": pp.WINDOW_WIDTH, "crop_margin": pp.CROP_MARGIN,
        "size": pp.SIZE, "channels": pp.CHANNELS, "tight_mask_pad_mm": pp.TIGHT_MASK_PAD_MM,
        "image_scale": "grey / 255 (0..1)", "slices": "every slice of the ROI containing tumour",
        "patient_score": "max over slices", "clinical_encoding": CLINICAL_ENCODING,
    }


def register_roles() -> None:
    """The select package owns the recipe -> roles registry; make sure ours is there."""
    from mvi_node.select import recipes as sel

    if NAME not in {r.name for r in sel.registered()}:
        sel.register(NAME, (ROLE,), "Liu 2021: CT late arterial phase, ResNet-18 + clinical factors")


CIRCLE_MARGIN_MM = 10.0  # seed 000's circles are ~1 cm wider than the tumour


@dataclass
class Prepared:
    """Everything the engine feeds the graph with, and what the report needs to draw."""

    images: np.ndarray  # (N, 3, 256, 256) float32
    clinical: np.ndarray | None  # (9,) when every factor is known
    factors: ClinicalFactors
    crops: pp.Crops
    roi: Roi
    sop_uids: list[str]
    series_uid: str


def mtd_from_roi(roi: Roi) -> float:
    """Max tumour diameter (mm): the ROI's largest in-plane Feret diameter, less the 1 cm
    margin when the ROI is a circle drawn around the tumour (seed 000's convention)."""
    d = pp.max_diameter_mm(roi.mask, roi.geometry.spacing_rc)
    return max(0.0, d - CIRCLE_MARGIN_MM) if roi.kind == "circle" else d


def prepare(exam: list[Dataset], target: list[Dataset], labs: ClinicalSource) -> Prepared | NoRoi:
    """Series + exam -> network inputs. ``NoRoi`` when no annotation gives a tumour."""
    with observe_stage("roi"):
        roi = find_roi(exam, target)
    if isinstance(roi, NoRoi):
        return roi
    with observe_stage("preprocess"):
        return _prepare_inputs(exam, roi, labs)


def _prepare_inputs(exam: list[Dataset], roi, labs: ClinicalSource) -> Prepared:
    geo = roi.geometry
    slices = roi.slices
    full = {z: _pixels(geo.datasets[z]) for z in slices}
    volume = np.zeros(geo.shape, np.float32)
    for z, ds in full.items():
        volume[z] = pp.hu(ds)
    crops = pp.crops_from_volume(volume, roi.mask, geo.spacing_rc, 0.0 if roi.kind == "circle" else pp.TIGHT_MASK_PAD_MM)
    ds0 = geo.datasets[0]
    factors = ClinicalFactors()
    factors.update(header_factors(ds0), "header")
    factors.update({"mtd_mm": mtd_from_roi(roi)}, "roi")
    factors.update(labs.lookup(str(ds0.get("AccessionNumber", "") or ""), str(ds0.get("PatientID", "") or "")) or {},
                   labs.name)
    vec = clinical_vector(factors) if factors.complete() else None
    return Prepared(crops.images(), vec, factors, crops, roi,
                    [str(geo.datasets[z].SOPInstanceUID) for z in crops.slice_indices], str(ds0.SeriesInstanceUID))


def _pixels(ds: Dataset) -> Dataset:
    """Headers from selection carry no pixels: read the file (any accepted transfer syntax)."""
    if "PixelData" in ds:
        return ds
    import pydicom

    return pydicom.dcmread(ds.filename)
