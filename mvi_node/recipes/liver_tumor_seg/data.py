"""Training volumes from in-memory synthetic exams, on the model grid the node serves.

Each exam is simulated (the phases the model reads: the arterial phase, and from 0.2.0
on the portal venous phase as a second channel), put in the slice order the node reads
a series in (ascending along the slice normal, so feet first), resampled and windowed by
the recipe's own :meth:`~mvi_node.infer.segmentation.SegmentationRecipe.model_input`,
and its truth made into labels 0 background, 1 liver, 2 tumour (nearest neighbour).
The generator renders every phase on one grid, so the channels are registered exactly;
:func:`patch_batch` shifts the extra channels by a voxel or so and sometimes blanks them,
as serving sees them (a phase registered through patient coordinates after another
breath hold, or no such phase in the exam).
"""

from __future__ import annotations

import numpy as np

from mvi_node.infer.segmentation import resample
from mvi_node.recipes.liver_tumor_seg.recipe import LiverTumorSeg
from mvi_node.recipes.seg_patches import HardLesions, Volume, lesion_components, patch_batch
from mvi_node.synth import simulate_exam
from mvi_node.synth.anatomy import L

RECIPE = LiverTumorSeg()


def target_labels(labels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    out = (labels == int(L.LIVER)).astype(np.uint8)
    out[truth > 0] = 2
    return out


#: generator phase of each channel role the recipe can read
PHASE_OF_ROLE = {"ct_arterial": "arterial", "ct_portal_venous": "portal", "ct_delayed": "delayed"}


def training_volume(seed: int, index: int, vendor: str, realism: str, matrix: int, channels: int = 1) -> Volume:
    phases = tuple(PHASE_OF_ROLE[r] for r in RECIPE.channel_roles[:channels])
    sim = simulate_exam("ct", seed, index, phases=phases, realism=realism, hard_cases="none", vendor=vendor,
                        matrix=matrix, annotations="none")
    lab = target_labels(sim.labels, sim.truth)[::-1]
    spacing = (sim.grid.thickness, *sim.grid.pixel_spacing)
    x = np.stack([RECIPE.model_input(np.ascontiguousarray(sim.volumes[p][::-1]), spacing) for p in phases])
    y = resample(np.ascontiguousarray(lab).astype(np.float32), spacing, RECIPE.spacing_mm, x.shape[1:],
                 linear=False).round().astype(np.uint8)
    return Volume(x, y, f"ct|{seed}|{index}|{vendor}|{realism}|{matrix}", np.flatnonzero(y == 2),
                  np.flatnonzero(y == 1), lesion_components(y))

__all__ = ["PHASE_OF_ROLE", "HardLesions", "Volume", "lesion_components", "patch_batch", "target_labels", "training_volume"]
