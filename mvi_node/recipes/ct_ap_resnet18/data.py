"""Training inputs of seed 000, made from what the serving path prepared.

``mvi-node train ct_ap_resnet18 --cohort ...`` hands the trainer one
:class:`~mvi_node.infer.recipe.TrainingExample` per usable cohort exam, whose
``prepared`` is what :func:`training_input` kept of the recipe's own
:class:`~mvi_node.recipes.ct_ap_resnet18.recipe.Prepared` (the arterial series chosen by
the node's selection, the ROI from the exam's annotations, the crops and clinical
vector exactly as the engine computes them). :func:`patient_crops` turns an example into
the :class:`PatientCrops` the training loop reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mvi_node.recipes.ct_ap_resnet18.recipe import Prepared


@dataclass
class PatientCrops:
    patient_id: str  # the example's key or patient hash: never a patient identifier
    label: int
    grey: np.ndarray  # (N, 256, 256) float16, 0..255
    clinical: np.ndarray | None  # (9,); None when a factor is missing (image-only variant only)
    vendor: str


@dataclass(frozen=True)
class TrainingCrops:
    """What training keeps of a :class:`Prepared`: grey crops (float16 0..255) and the
    clinical vector (None when a factor is missing); no volume, no ROI mask."""

    grey: np.ndarray
    clinical: np.ndarray | None
    slice_indices: tuple[int, ...] = ()


def training_input(prepared: Prepared) -> TrainingCrops:
    """The trainer hook of :mod:`mvi_node.commands.train`: the examples hold this."""
    clinical = None if prepared.clinical is None else np.asarray(prepared.clinical, np.float32)
    return TrainingCrops(np.asarray(prepared.crops.grey, np.float16), clinical,
                         tuple(int(z) for z in prepared.crops.slice_indices))


def patient_crops(example: Any, label: str = "mvi") -> PatientCrops:
    """:class:`PatientCrops` of one :class:`~mvi_node.infer.recipe.TrainingExample`
    (its ``prepared`` a :class:`Prepared` or a :class:`TrainingCrops`)."""
    p = example.prepared
    kept = p if isinstance(p, TrainingCrops) else training_input(p)
    return PatientCrops(example.group, int(example.labels[label]), kept.grey, kept.clinical,
                        str(example.attributes.get("manufacturer", "") or ""))
