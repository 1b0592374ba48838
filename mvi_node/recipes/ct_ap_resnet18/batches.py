"""The slices an epoch of seed 000's training visits and the tensors a batch of them becomes:
shared by the label fit (:mod:`~mvi_node.recipes.ct_ap_resnet18.train`) and the int8
distillation (:mod:`~mvi_node.recipes.ct_ap_resnet18.distill`). torch: training only."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from mvi_node.recipes.ct_ap_resnet18.data import PatientCrops


def to_input(grey: np.ndarray) -> torch.Tensor:
    """(N, 256, 256) grey 0..255 -> (N, 3, 256, 256) float 0..1 (the ONNX ``image``)."""
    x = torch.as_tensor(np.asarray(grey, dtype=np.float32) / 255.0)
    return x[:, None].repeat(1, 3, 1, 1)


def epoch_slices(patients: Sequence[PatientCrops], per_patient: int, seed: Sequence[int]) -> list[tuple[PatientCrops, int]]:
    """(patient, slice index): ``per_patient`` slices of each patient drawn without
    replacement, all in a seeded random order."""
    rng = np.random.default_rng(list(seed))
    items = [(p, int(z)) for p in patients
             for z in rng.choice(len(p.grey), min(per_patient, len(p.grey)), replace=False)]
    return [items[i] for i in rng.permutation(len(items))]


def batch_inputs(chunk: Sequence[tuple[PatientCrops, int]], augment: Callable,
                 clinical: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The augmented image batch (N, 3, 256, 256) in 0..1 and, for the clinical variant,
    the clinical vectors (N, 9) of ``chunk``."""
    x = torch.stack([torch.as_tensor(augment(torch.as_tensor(p.grey[z][None], dtype=torch.float32)))
                     for p, z in chunk]) / 255.0
    c = torch.as_tensor(np.stack([p.clinical for p, _ in chunk])) if clinical else None
    return x.repeat(1, 3, 1, 1), c
