"""mr_3seq_grade on the recipe interface: roles, factors, inputs, prediction. Torch-free.

Seed 001 (Sun et al., WJSO 2022): Gd-EOB / extracellular DCE-MRI, inputs T1
pre-contrast, portal venous and transitional/delayed (the paper's T1, T1V, T1D); one
CNN branch per sequence, softmax over M0/M1/M2, P(MVI) = P(M1) + P(M2), the decision
at the manifest's threshold. When AFP is known, the paper's nomogram gives a second
probability: logit = -3.51 + 1.53 [AFP > 20 ng/mL] + 3.58 [DL-MVI present].

The sequences are resampled onto the portal-venous grid by the shared MR preprocessing
(N4, intensity 0..255, rigid registration when they do not line up); the ROI is found
on the portal-venous series (an annotation first, else the automatic segmentation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mvi_node.clinical import ClinicalSource, Factor, FactorSchema, FactorValues
from mvi_node.common.frames import frame_number
from mvi_node.concepts import NOMOGRAM_PROBABILITY
from mvi_node.infer.recipe import (FAILED, MVI_GRADE, ExamInputs, Finding, KeySlice, ModelRunner, NotEvaluated,
                                   Prediction, Recipe, Score, frozen)
from mvi_node.metrics import observe_stage
from mvi_node.recipes.mr_3seq_grade import crops as cr
from mvi_node.roi import NoRoi, Roi
from mvi_node.roi.automatic import axial_diameter_mm
from mvi_node.roi.geometry import plane_of

NAME = "mr_3seq_grade"
VARIANT = "image_only"
#: network input name -> selection role, in the graph's branch order
INPUTS = {"t1_pre": "mr_t1_pre", "portal_venous": "mr_portal_venous", "transitional": "mr_transitional"}
REFERENCE = "mr_portal_venous"
#: fraction of the body a sequence must cover on each key slice (after resampling)
MIN_SLICE_COVERAGE = 0.9
GRADES = ("M0", "M1", "M2")
#: how the captures name each input
LABELS = {"t1_pre": "T1 pre-contrast", "portal_venous": "portal venous", "transitional": "transitional/delayed"}

FACTORS = FactorSchema([
    Factor("afp_ng_ml", "number", "alpha-fetoprotein (nomogram only)", unit="ng/mL"),
    Factor("mtd_mm", "number", "maximum tumour diameter, from the ROI (reported, not a model input)", unit="mm"),
])

#: Sun et al. 2022, Fig. 6: the nomogram's logistic model
NOMOGRAM = {"intercept": -3.51, "afp_gt_20": 1.53, "dl_mvi_present": 3.58, "afp_cut_ng_ml": 20.0}


def nomogram_probability(afp_ng_ml: float, dl_mvi_present: bool) -> float:
    """Seed 001's nomogram: P = sigmoid(-3.51 + 1.53 [AFP > 20] + 3.58 [DL-MVI present])."""
    logit = (NOMOGRAM["intercept"] + NOMOGRAM["afp_gt_20"] * (float(afp_ng_ml) > NOMOGRAM["afp_cut_ng_ml"])
             + NOMOGRAM["dl_mvi_present"] * bool(dl_mvi_present))
    return 1.0 / (1.0 + math.exp(-logit))


def preprocessing_constants() -> dict[str, Any]:
    from mvi_node.preprocess.mr import PREPROCESSING_CONSTANTS

    return {
        "inputs": dict(INPUTS), "reference": REFERENCE, "size": cr.SIZE, "margin_px": cr.MARGIN_PX,
        "slices": "three consecutive slices through the ROI's maximum in-plane diameter (on the reference grid)",
        "crop": "ROI rectangle (union over the three slices) + margin, resized to 320 x 320 (linear)",
        "image_scale": "grey / 255 (0..1), grey = the MR preprocessing's 0..255 map",
        "combinations": "27 (one slice per sequence); class probabilities averaged over them",
        "probability": "P(M1) + P(M2)", "nomogram": dict(NOMOGRAM),
        "mr_preprocessing": PREPROCESSING_CONSTANTS,
    }


@dataclass
class Prepared:
    """The three sequences' crops and what the report needs to draw them."""

    images: dict[str, np.ndarray]  # input name -> (3, 320, 320) float32 grey 0..255
    slices: tuple[int, ...]  # indices on the reference grid
    box: cr.CropBox
    roi: Roi
    factors: FactorValues
    series_uid: str  # the reference series
    #: input name -> SOP Instance UID of the source image the middle slice shows
    #: (None when the sequence is not on the reference grid: no capture drawn on it)
    key_sops: dict[str, str | None]
    preprocessing: dict[str, Any]
    #: input name -> its frame when that image is a frame of an Enhanced instance
    key_frames: dict[str, int | None] = field(default_factory=dict)

    def feeds(self) -> dict[str, np.ndarray]:
        return {name: (img[None] / 255.0).astype(np.float32) for name, img in self.images.items()}


def _same_plane(a, b, tol_mm: float = 0.5) -> bool:
    """Whether two slices' pixels coincide (position, orientation, spacing, size)."""
    pa, pb = plane_of(a), plane_of(b)
    return (pa.mask.shape == pb.mask.shape and np.allclose(pa.orientation, pb.orientation, atol=1e-4)
            and np.allclose(pa.spacing_rc, pb.spacing_rc, atol=1e-4)
            and float(np.linalg.norm(pa.position - pb.position)) <= tol_mm)


def _key_image(series, ref_slice, registration):
    """The image of ``series`` that the reference slice shows, when the sequence was not
    moved (registration) and one of its images lies on that plane."""
    if registration is not None and getattr(registration, "performed", False):
        return None
    for ds in series:
        if "ImagePositionPatient" in ds and _same_plane(ds, ref_slice):
            return ds
    return None


def prepare(exam: ExamInputs, labs: ClinicalSource | None = None) -> Prepared | NotEvaluated:
    from mvi_node.preprocess.mr import MRPreprocessError, prepare_mr

    target = list(exam.series[REFERENCE])
    ref_uid = str(target[0].SeriesInstanceUID)
    with observe_stage("roi"):
        roi = exam.find_roi(target)
    if isinstance(roi, NoRoi):
        return NotEvaluated(roi.outcome, tuple(roi.reasons), series_uid=ref_uid)
    try:
        vols = prepare_mr({role: list(exam.series[role]) for role in INPUTS.values()}, REFERENCE)
    except MRPreprocessError as exc:
        return NotEvaluated(FAILED, (f"MR preprocessing: {exc}",), series_uid=ref_uid)
    geo = roi.geometry
    mask = np.asarray(roi.mask, bool)
    with observe_stage("preprocess"):
        shape = vols.arrays[REFERENCE].shape
        if mask.shape != shape:
            return NotEvaluated(FAILED, (f"ROI grid {mask.shape} is not the reference grid {shape}",), ref_uid)
        try:
            slices = cr.key_slices(mask, geo.spacing_rc)
        except ValueError as exc:
            return NotEvaluated(FAILED, (str(exc),), series_uid=ref_uid)
        box = cr.roi_box(mask, slices)
        for name, role in INPUTS.items():  # no guessed input: a sequence must hold the tumour slices
            covered = vols.slice_coverage(role)[list(slices)]
            if covered.min() < MIN_SLICE_COVERAGE:
                return NotEvaluated(FAILED, (f"{role} does not cover the tumour slices of {REFERENCE} "
                                             f"({covered.min():.0%} of the body on the least covered one)",), ref_uid)
        images = {name: cr.sequence_crops(vols.arrays[role], slices, box) for name, role in INPUTS.items()}
    ref_slice = geo.datasets[slices[1]]
    key_images = {name: (ref_slice if role == REFERENCE else
                         _key_image(exam.series[role], ref_slice, vols.registration.get(role)))
                  for name, role in INPUTS.items()}
    # (SOP, frame): frames of an Enhanced instance share its SOP Instance UID
    key_sops = {name: (str(d.SOPInstanceUID) if d is not None else None) for name, d in key_images.items()}
    key_frames = {name: (frame_number(d) if d is not None else None) for name, d in key_images.items()}
    factors = FACTORS.values()
    factors.update({"mtd_mm": float(axial_diameter_mm(mask, geo.spacing_rc))}, "roi")
    source = labs if labs is not None else exam.clinical
    found = source.lookup(str(ref_slice.get("AccessionNumber", "") or ""), str(ref_slice.get("PatientID", "") or ""))
    # only AFP from the site's source: the diameter is the ROI's, measured on the reference grid
    factors.update({k: v for k, v in (found or {}).items() if k == "afp_ng_ml"}, source.name)
    return Prepared(images, slices, box, roi, factors, ref_uid, key_sops, vols.record(), key_frames)


def choose_variant(variants) -> str:
    if VARIANT in variants:
        return VARIANT
    return next(iter(variants))


class Mr3SeqGrade(Recipe):
    name = NAME
    summary = "Sun 2022: DCE-MRI T1 pre / portal venous / transitional, three-branch CNN, MVI grade M0-M2"
    modalities = frozenset({"MR"})
    requires = tuple(INPUTS.values())
    factors = FACTORS
    endpoint = MVI_GRADE
    trainer = "mvi_node.recipes.mr_3seq_grade.pipeline"
    capture_window = None  # MR: each series' own window

    def prepare(self, exam: ExamInputs) -> Prepared | NotEvaluated:
        return prepare(exam)

    def predict(self, prepared: Prepared, model: ModelRunner) -> Prediction | NotEvaluated:
        variant = choose_variant(model.variants)
        with observe_stage("infer"):
            classes, prob, maps = model.run(variant, prepared.feeds(), ["class_probabilities", "probability", "gradcam"])
        p = float(prob[0])
        grades = {g: round(float(v), 6) for g, v in zip(GRADES, classes[0])}
        threshold = model.threshold(variant)
        served = model.calibrate(variant, p)  # the scale of the threshold: the decision the SR shows
        present = served >= threshold
        scores = ()
        afp = prepared.factors["afp_ng_ml"]
        if afp is not None:
            basis = (f"Sun 2022 nomogram: AFP {'>' if float(afp) > 20 else '<='} 20 ng/mL, "
                     f"deep-learning MVI {'present' if present else 'absent'}")
            scores = (Score(NOMOGRAM_PROBABILITY, round(nomogram_probability(float(afp), present), 6), basis),)
        mask = np.asarray(prepared.roi.mask, bool)
        z = prepared.slices[1]
        box = frozen(prepared.box.as_dict())
        # reference first: the report's key slice (ROI outline, SR region) is the first best
        order = sorted(INPUTS, key=lambda n: INPUTS[n] != REFERENCE)
        slices = tuple(KeySlice(prepared.key_sops[name], int(z), round(p, 6), box, maps[0, list(INPUTS).index(name)],
                                mask[z], frame_number=prepared.key_frames.get(name), label=LABELS[name])
                       for name in order if prepared.key_sops[name])
        mtd = prepared.factors["mtd_mm"]
        finding = Finding("Tumor 1", p, p >= threshold, float(mtd) if mtd else None, class_probabilities=frozen(grades),
                          key_slices=slices, scores=scores)
        return Prediction(
            probability=p, threshold=threshold, decision=p >= threshold, findings=(finding,),
            series_uid=prepared.series_uid, variant=variant,
            roi=frozen({**prepared.roi.describe(), "slices_used": list(prepared.slices)}),
            factors=frozen(prepared.factors.as_dict()), factors_origin=frozen(prepared.factors.origin),
            factors_used=afp is not None, factors_missing=tuple(prepared.factors.missing()),
            class_probabilities=frozen(grades),
        )

    def preprocessing(self) -> dict[str, Any]:
        return preprocessing_constants()


RECIPE = Mr3SeqGrade
