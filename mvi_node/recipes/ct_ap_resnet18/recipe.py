"""ct_ap_resnet18 on the recipe interface: roles, factors, inputs, prediction. Torch-free.

Seed 000 (Liu et al. 2021): CT late arterial phase, per-slice ResNet-18 probability
with Grad-CAM computed inside the ONNX graph, patient decision = max over tumour
slices, threshold from Youden's J. The clinical variant runs only when all seven
factors are known, else the image-only one, and the result says which and what was
missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from mvi_node.clinical import ClinicalSource, Factor, FactorSchema, FactorValues, header_factors
from mvi_node.common.frames import frame_number
from mvi_node.infer.recipe import (MVI, NO_FACTORS, ExamInputs, Finding, KeySlice, ModelRunner, NotEvaluated,
                                   Prediction, Recipe, frozen)
from mvi_node.metrics import observe_stage
from mvi_node.recipes.ct_ap_resnet18 import preprocess as pp
from mvi_node.roi import NoRoi, Roi, find_roi

NAME = "ct_ap_resnet18"
ROLE = "ct_arterial"
VARIANTS = ("clinical", "image_only")
IMAGE_SHAPE = ("N", pp.CHANNELS, pp.SIZE, pp.SIZE)
CLINICAL_SHAPE = ("N", 9)

#: seed 000's seven factors, in the order of the clinical vector
FACTORS = FactorSchema([
    Factor("sex", "category", "patient sex (DICOM PatientSex)", choices=("M", "F")),
    Factor("age", "number", "age at the study", unit="years"),
    Factor("mtd_mm", "number", "maximum tumour diameter, from the ROI", unit="mm"),
    Factor("afp_ng_ml", "number", "alpha-fetoprotein", unit="ng/mL"),
    Factor("child_pugh", "category", "Child-Pugh class", choices=("A", "B", "C")),
    Factor("hbsag", "bool", "hepatitis B surface antigen positive"),
    Factor("hcv", "bool", "hepatitis C antibody positive"),
])

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


def clinical_vector(f: FactorValues) -> np.ndarray:
    """(9,) float32; raises ValueError when a factor is missing."""
    if not f.complete():
        raise ValueError(f"missing clinical factors: {f.missing()}")
    cp = [1.0 if f["child_pugh"] == c else 0.0 for c in "ABC"]
    return np.asarray([
        1.0 if f["sex"] == "M" else 0.0,
        float(f["age"]) / 100.0,
        float(f["mtd_mm"]) / 100.0,
        math.log10(1.0 + max(float(f["afp_ng_ml"]), 0.0)) / 5.0,
        *cp,
        1.0 if f["hbsag"] else 0.0,
        1.0 if f["hcv"] else 0.0,
    ], dtype=np.float32)


def preprocessing_constants() -> dict[str, object]:
    """What the manifest records so a site can check its inputs match."""
    return {
        "window_level": pp.WINDOW_LEVEL, "window_width": pp.WINDOW_WIDTH, "crop_margin": pp.CROP_MARGIN,
        "size": pp.SIZE, "channels": pp.CHANNELS, "tight_mask_pad_mm": pp.TIGHT_MASK_PAD_MM,
        "image_scale": "grey / 255 (0..1)", "slices": "every slice of the ROI containing tumour",
        "patient_score": "max over slices", "clinical_encoding": CLINICAL_ENCODING,
    }


CIRCLE_MARGIN_MM = 10.0  # seed 000's circles are ~1 cm wider than the tumour


@dataclass
class Prepared:
    """Everything the graph is fed with, and what the report needs to draw."""

    images: np.ndarray  # (N, 3, 256, 256) float32
    clinical: np.ndarray | None  # (9,) when every factor is known
    factors: FactorValues
    crops: pp.Crops
    roi: Roi
    sop_uids: list[str]
    series_uid: str
    #: frame of each key slice when the series is an Enhanced multi-frame instance
    frames: list[int | None] | None = None


def mtd_from_roi(roi: Roi) -> float:
    """Max tumour diameter (mm): the ROI's largest in-plane Feret diameter, less the 1 cm
    margin when the ROI is a circle drawn around the tumour (seed 000's convention)."""
    d = pp.max_diameter_mm(roi.mask, roi.geometry.spacing_rc)
    return max(0.0, d - CIRCLE_MARGIN_MM) if roi.kind == "circle" else d


def prepare(exam: list[Dataset], target: list[Dataset], labs: ClinicalSource, automatic=None) -> Prepared | NoRoi:
    """Series + exam -> network inputs. ``NoRoi`` when no annotation gives a tumour and
    ``automatic`` (the engine's automatic ROI, ``ExamInputs.auto_roi``) finds none either."""
    with observe_stage("roi"):
        roi = find_roi(exam, target, automatic=automatic)
    if isinstance(roi, NoRoi):
        return roi
    with observe_stage("preprocess"):
        return _prepare_inputs(roi, labs)


def _prepare_inputs(roi: Roi, labs: ClinicalSource) -> Prepared:
    geo = roi.geometry
    volume = np.zeros(geo.shape, np.float32)
    for z in roi.slices:
        volume[z] = pp.hu(geo.datasets[z])
    crops = pp.crops_from_volume(volume, roi.mask, geo.spacing_rc, 0.0 if roi.kind == "circle" else pp.TIGHT_MASK_PAD_MM)
    ds0 = geo.datasets[0]
    factors = FACTORS.values()
    factors.update(header_factors(ds0), "header")
    factors.update({"mtd_mm": mtd_from_roi(roi)}, "roi")
    factors.update(labs.lookup(str(ds0.get("AccessionNumber", "") or ""), str(ds0.get("PatientID", "") or "")) or {},
                   labs.name)
    vec = clinical_vector(factors) if factors.complete() else None
    return Prepared(crops.images(), vec, factors, crops, roi,
                    [str(geo.datasets[z].SOPInstanceUID) for z in crops.slice_indices], str(ds0.SeriesInstanceUID),
                    [frame_number(geo.datasets[z]) for z in crops.slice_indices])


def choose_variant(variants, have_clinical: bool) -> str:
    """Clinical variant only with every factor present; a model may ship only one variant."""
    if have_clinical and "clinical" in variants:
        return "clinical"
    for name, v in variants.items():
        if not v.needs_clinical:
            return name
    raise ValueError(f"model {NAME} has no image-only variant")


class CtApResnet18(Recipe):
    name = NAME
    summary = "Liu 2021: CT late arterial phase, ResNet-18 + clinical factors"
    modalities = frozenset({"CT"})
    requires = (ROLE,)
    factors = FACTORS
    endpoint = MVI
    trainer = "mvi_node.recipes.ct_ap_resnet18.pipeline"
    capture_window = (pp.WINDOW_LEVEL, pp.WINDOW_WIDTH)

    def prepare(self, exam: ExamInputs) -> Prepared | NotEvaluated:
        target = list(exam.series[ROLE])
        prepared = prepare(list(exam.exam), target, exam.clinical, exam.auto_roi)
        if isinstance(prepared, NoRoi):
            return NotEvaluated(prepared.outcome, tuple(prepared.reasons), series_uid=str(target[0].SeriesInstanceUID))
        return prepared

    def predict(self, prepared: Prepared, model: ModelRunner) -> Prediction | NotEvaluated:
        try:
            variant = choose_variant(model.variants, prepared.clinical is not None)
        except ValueError as exc:  # a site model that ships only the clinical variant
            return NotEvaluated(NO_FACTORS, (str(exc),), prepared.series_uid, tuple(prepared.factors.missing()))
        feeds = {"image": prepared.images}
        if model.variants[variant].needs_clinical:
            feeds["clinical"] = np.repeat(np.asarray(prepared.clinical, np.float32)[None], len(prepared.images), 0)
        with observe_stage("infer"):
            probs, maps = model.run(variant, feeds, ["probability", "gradcam"], batched=list(feeds))
        threshold = model.threshold(variant)
        score = float(probs.max())
        mask = np.asarray(prepared.roi.mask, bool)
        frames = prepared.frames or [None] * len(prepared.sop_uids)
        slices = tuple(
            KeySlice(sop, int(z), round(float(p), 6), frozen(box.as_dict()), maps[i], mask[int(z)], frame)
            for i, (sop, z, p, box, frame) in enumerate(zip(prepared.sop_uids, prepared.crops.slice_indices, probs,
                                                            prepared.crops.boxes, frames)))
        mtd = prepared.factors["mtd_mm"]
        finding = Finding("Tumor 1", score, score >= threshold, float(mtd) if mtd else None, key_slices=slices)
        used = variant == "clinical" and prepared.clinical is not None
        return Prediction(
            probability=score, threshold=threshold, decision=score >= threshold, findings=(finding,),
            series_uid=prepared.series_uid, variant=variant, roi=frozen(prepared.roi.describe()),
            factors=frozen(prepared.factors.as_dict()), factors_origin=frozen(prepared.factors.origin),
            factors_used=used, factors_missing=tuple(prepared.factors.missing()),
        )

    def preprocessing(self) -> dict[str, object]:
        return preprocessing_constants()


RECIPE = CtApResnet18
