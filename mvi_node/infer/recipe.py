"""The recipe interface: what a published method must declare and do to be served.

The engine owns this module; recipes import it, never the other way round. A recipe is
found through the entry-point group ``mvi_node.recipes`` (see
:mod:`mvi_node.infer.catalog`), so adding one is adding a package. It declares

- who it is and what it needs: ``name``, ``modalities``, the series ``requires`` (roles
  of :mod:`mvi_node.select.rules`), the clinical ``factors`` it uses (a
  :class:`~mvi_node.clinical.FactorSchema`), the ``endpoint`` it predicts;
- how inputs are made: :meth:`Recipe.prepare` from the selected series, the whole exam
  (annotations for the ROI) and the clinical source -> anything the recipe likes, or
  :class:`NotEvaluated`;
- how it predicts: :meth:`Recipe.predict` with a :class:`ModelRunner` over the graphs or
  arrays of its model folder -> :class:`Prediction` or :class:`NotEvaluated`.

The value types here are recipe-neutral: the pipeline, the report and the admin API
read them and never a recipe's insides.
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Mapping, Protocol, Sequence

import numpy as np
from pydicom.dataset import Dataset

from mvi_node.clinical import ClinicalSource, FactorSchema
from mvi_node.concepts import INVASION_ABSENT, INVASION_PRESENT, MVI_PROBABILITY, NEOPLASM, Code

#: outcomes of one exam x recipe; ``OK`` is the only one that carries a prediction
OK = "ok"
NO_SERIES = "no eligible series"
NO_ROI = "no tumour ROI"
NO_MODEL = "no model"
NO_FACTORS = "clinical factors missing"
FAILED = "failed"


@dataclass(frozen=True)
class Endpoint:
    """What a recipe predicts, and how the report names it.

    ``concept`` names the probability (a NUM); ``positive``/``negative`` are the finding
    (a CODE) for a decision above/below the threshold; ``classes`` are the labels of a
    multi-class endpoint (MVI grade M0/M1/M2), empty for a binary one.
    """

    name: str
    concept: Code
    positive: Code
    negative: Code
    finding_type: Code = NEOPLASM
    classes: tuple[str, ...] = ()
    #: the cohort label column this endpoint trains on
    label: str = ""
    #: short words for titles and burned-in captions
    title: str = "MVI"
    present: str = "MVI present"
    absent: str = "MVI absent"


#: seed 000's endpoint: MVI present / absent
MVI = Endpoint("mvi", MVI_PROBABILITY, INVASION_PRESENT, INVASION_ABSENT, label="mvi")
#: seed 001's endpoint: MVI grade M0 (absent) / M1 / M2; P(MVI) = P(M1) + P(M2). The
#: first class is the negative one (calibration rescales the others, see infer.engine).
MVI_GRADE = Endpoint("mvi_grade", MVI_PROBABILITY, INVASION_PRESENT, INVASION_ABSENT, classes=("M0", "M1", "M2"),
                     label="mvi_grade")


@dataclass(frozen=True)
class ExamInputs:
    """What a recipe may look at for one exam.

    ``series``: the datasets of each required role's winning series (headers at least:
    classic images, or frame views of an Enhanced instance; read pixels with
    ``mvi_node.common.frames.frame_pixels``). ``exam``: every dataset of the
    exam, all its studies (annotations, other phases). ``clinical``: the site's source.
    ``auto_roi``: the automatic ROI of a target series (a served segmentation model, see
    :mod:`mvi_node.infer.segmentation`), None when none is served; :meth:`find_roi` is
    the ROI order every recipe uses: an annotation in the exam first, else this.
    """

    series: Mapping[str, Sequence[Dataset]]
    exam: Sequence[Dataset]
    clinical: ClinicalSource
    patient_id: str = ""
    study_uids: tuple[str, ...] = ()
    auto_roi: Callable[[Any], Any] | None = None

    def find_roi(self, target: Any):
        """The tumour ROI on ``target`` (datasets or geometry): the exam's annotation (SEG,
        RTSTRUCT, SR, GSPS) first, else the automatic segmentation; a ``NoRoi`` says why not."""
        from mvi_node.roi import find_roi

        return find_roi(self.exam, target, automatic=self.auto_roi)


@dataclass(frozen=True)
class NotEvaluated:
    """A recipe could not evaluate the exam: ``outcome`` (one of the constants above)
    and human-readable ``reasons`` (UIDs at most, never patient attributes)."""

    outcome: str
    reasons: tuple[str, ...] = ()
    series_uid: str | None = None
    factors_missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeySlice:
    """One evaluated image of a lesion: the source instance, its probability, and an
    explanation map (0..1) on the crop ``crop_box`` of the slice (or on the slice grid
    when ``crop_box`` is None), with the ROI outline on the slice grid. ``frame_number``:
    the frame when the source is an Enhanced multi-frame instance (a frame view's
    ``mvi_node.common.frames.frame_number``), so results cite (SOP, frame)."""

    sop_instance_uid: str
    slice_index: int
    probability: float
    crop_box: Mapping[str, float] | None = None
    explanation: np.ndarray | None = None
    roi_mask: np.ndarray | None = None
    frame_number: int | None = None
    #: what the image shows, for a recipe of several series (e.g. "T1 pre-contrast")
    label: str = ""


@dataclass(frozen=True)
class Score:
    """A further probability of a finding besides the recipe's own, e.g. a published
    nomogram that combines the model's decision with a clinical factor. ``basis`` says in
    words what it was computed from (the SR shows it); never a patient attribute."""

    concept: Code
    value: float
    basis: str = ""


@dataclass(frozen=True)
class Finding:
    """One lesion's result. ``class_probabilities`` for multi-class endpoints; ``scores``
    for further probabilities (nomograms), reported as NUMs of their own concept."""

    tracking_id: str
    probability: float
    decision: bool
    max_diameter_mm: float | None = None
    class_probabilities: Mapping[str, float] = field(default_factory=dict)
    key_slices: tuple[KeySlice, ...] = ()
    scores: tuple[Score, ...] = ()


@dataclass(frozen=True)
class Prediction:
    """A recipe's patient-level result: score, threshold and decision, its findings, the
    series evaluated, the ROI used, the model variant and the clinical factors."""

    probability: float
    threshold: float
    decision: bool
    findings: tuple[Finding, ...]
    series_uid: str
    variant: str
    roi: Mapping[str, Any] = field(default_factory=dict)
    factors: Mapping[str, Any] = field(default_factory=dict)
    factors_origin: Mapping[str, str] = field(default_factory=dict)
    factors_used: bool = False
    factors_missing: tuple[str, ...] = ()
    class_probabilities: Mapping[str, float] = field(default_factory=dict)
    #: the model's own score before the manifest's calibration (None: not calibrated)
    raw_probability: float | None = None


class ModelRunner(Protocol):
    """The engine's handle on one recipe's verified model folder."""

    @property
    def variants(self) -> Mapping[str, Any]:
        """Variant name -> :class:`mvi_node.infer.manifest.Variant`."""

    def threshold(self, variant: str) -> float: ...

    def calibrate(self, variant: str, p: float) -> float:
        """``p`` through the variant's calibration (identity when it has none): the scale
        the threshold is on, for a recipe that needs the served decision itself."""

    def run(self, variant: str, feeds: Mapping[str, np.ndarray], outputs: Sequence[str],
            batched: Sequence[str] = ()) -> list[np.ndarray]:
        """Run an ONNX variant; inputs named in ``batched`` are split along axis 0 in
        the engine's batch size and the outputs concatenated."""

    def arrays(self, variant: str) -> Mapping[str, np.ndarray]:
        """A classical model's parameters (``.npz`` read without unpickling)."""


class RecipeError(ValueError):
    """A recipe that cannot be served; the message names the recipe and what is missing."""


class Recipe(ABC):
    """Base class of every recipe. Subclasses set the class attributes and implement
    :meth:`prepare` and :meth:`predict`; the engine calls them in that order."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: modalities the recipe reads; an exam of another modality gets nothing from it
    modalities: ClassVar[frozenset[str]] = frozenset()
    #: roles (``mvi_node.select.rules.ROLES``) that must each have a winning series
    requires: ClassVar[tuple[str, ...]] = ()
    factors: ClassVar[FactorSchema] = FactorSchema()
    endpoint: ClassVar[Endpoint] = MVI
    #: ``module`` with ``add_arguments(parser)`` and ``main(args) -> int``; may import torch
    trainer: ClassVar[str | None] = None
    #: (level, width) for the explanation captures; None: each series' own window
    capture_window: ClassVar[tuple[float, float] | None] = None
    #: "prediction" (offered every exam of its modalities) or "segmentation" (a
    #: :class:`mvi_node.infer.segmentation.SegmentationRecipe`: the others' automatic ROI)
    task: ClassVar[str] = "prediction"

    def qualifies(self, winners: Mapping[str, Any]) -> tuple[bool, str]:
        """Whether the exam's winning series (role -> unit) feed this recipe, and why not."""
        absent = [r for r in self.requires if r not in winners]
        return (not absent, "no series holds role " + ", ".join(absent) if absent else "")

    @abstractmethod
    def prepare(self, exam: ExamInputs) -> Any:
        """Network inputs (any type the recipe's :meth:`predict` understands) or
        :class:`NotEvaluated` (no ROI, unusable series ...)."""

    @abstractmethod
    def predict(self, prepared: Any, model: ModelRunner) -> Prediction | NotEvaluated:
        """The prediction from prepared inputs."""

    def preprocessing(self) -> dict[str, Any]:
        """Constants a manifest records so a site can check its inputs match."""
        return {}

    def add_train_arguments(self, parser: argparse.ArgumentParser) -> None:
        """``mvi-node train NAME`` options; the trainer module's ``add_arguments``."""
        if self.trainer:
            import importlib

            importlib.import_module(self.trainer).add_arguments(parser)

    def train(self, args: argparse.Namespace) -> int:
        if not self.trainer:
            raise RecipeError(f"recipe {self.name!r} has no trainer")
        import importlib

        return int(importlib.import_module(self.trainer).main(args) or 0)


def frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only copy, for the value types above."""
    return MappingProxyType(dict(mapping or {}))


#: the splits a :class:`TrainingExample` belongs to
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class TrainingExample:
    """One cohort exam made ready for a recipe's trainer by the serving path (selection,
    ``qualifies``, ROI from the exam's annotations, :meth:`Recipe.prepare`).

    ``key`` names the exam in logs and reports ("row 12"): never a patient identifier.
    ``group`` is a hash of the patient, so no patient has exams on both sides of a split.
    ``labels``: the cohort's label columns for this exam (``mvi`` 0/1, ``mvi_grade``
    M0/M1/M2, ``early_recurrence`` 0/1; absent ones left out). ``split``: one of
    :data:`SPLITS`. ``prepared``: what :meth:`Recipe.prepare` returned, or what the
    trainer module's ``training_input(prepared)`` keeps of it when it defines one (so a
    cohort of many exams does not hold every volume in memory). ``attributes``:
    ``manufacturer`` and ``max_diameter_mm`` when known, for subgroup reporting.
    """

    key: str
    group: str
    labels: Mapping[str, Any]
    split: str
    prepared: Any
    attributes: Mapping[str, Any] = field(default_factory=dict)
    row: int = 0

    def label(self, name: str) -> Any:
        """The value of label column ``name`` (KeyError when the cohort has none)."""
        return self.labels[name]
