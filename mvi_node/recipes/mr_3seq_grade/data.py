"""Training inputs of seed 001, made from what the serving path prepared.

``mvi-node train mr_3seq_grade --cohort ...`` (or ``--data`` a synthetic folder) hands
the trainer one :class:`~mvi_node.infer.recipe.TrainingExample` per usable exam; its
``prepared`` is :func:`training_input` of the recipe's own
:class:`~mvi_node.recipes.mr_3seq_grade.recipe.Prepared`: the crops exactly as the node
computes them (selection, ROI, MR preprocessing), nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mvi_node.recipes.mr_3seq_grade.recipe import GRADES, INPUTS, Prepared


@dataclass(frozen=True)
class TrainingCrops:
    """(3 sequences, 3 slices, 320, 320) float16 grey 0..255, in the graph's input order."""

    grey: np.ndarray


def training_input(prepared: Prepared) -> TrainingCrops:
    """The trainer hook of :mod:`mvi_node.commands.train`: the examples hold this."""
    return TrainingCrops(np.stack([prepared.images[name] for name in INPUTS]).astype(np.float16))


@dataclass
class PatientInputs:
    patient_id: str  # the example's patient hash: never a patient identifier
    grade: int  # index into GRADES
    grey: np.ndarray  # (3, 3, 320, 320) float16
    vendor: str
    diameter_mm: float | None

    @property
    def mvi(self) -> int:
        return int(self.grade > 0)


def patient_inputs(example: Any) -> PatientInputs:
    p = example.prepared
    kept = p if isinstance(p, TrainingCrops) else training_input(p)
    grade = str(example.labels["mvi_grade"])
    return PatientInputs(example.group, GRADES.index(grade), kept.grey,
                         str(example.attributes.get("manufacturer", "") or ""),
                         example.attributes.get("max_diameter_mm"))
