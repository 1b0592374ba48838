"""liver_tumor_seg: the automatic liver and tumour ROI (seed 002, Lin et al., J Cancer 2024). Torch-free.

A residual U-Net (MONAI ``UNet`` with residual units) labels background / liver /
tumour on the CT arterial phase; grey values are windowed and scaled to 0..1. The
paper's patches are 64 x 128 x 128 on MRI at native resolution; on this node's CPU the
series is resampled to 5 x 2.5 x 2.5 mm and trained and served with 32 x 96 x 96
tiles (160 x 240 x 240 mm, most of a liver), overlap 0.25 with Gaussian blending.

The engine never asks this recipe for a probability: it serves it as the automatic ROI
of every other recipe (:mod:`mvi_node.infer.segmentation`), and ``mvi-node segment``
writes its label map as a DICOM SEG.
"""

from __future__ import annotations

from mvi_node.infer.segmentation import SegmentationRecipe

NAME = "liver_tumor_seg"
ROLE = "ct_arterial"


class LiverTumorSeg(SegmentationRecipe):
    name = NAME
    summary = "Lin 2024 (seed 002): residual 3D U-Net, liver and tumour on the CT arterial phase"
    modalities = frozenset({"CT"})
    requires = (ROLE,)
    #: input channels in order; a model reads the first N (its graph's channel axis): 0.1.0 the
    #: arterial phase only, 0.2.0 also the portal venous phase resampled onto the arterial grid
    channel_roles = (ROLE, "ct_portal_venous")
    trainer = "mvi_node.recipes.liver_tumor_seg.train"
    labels = ("background", "liver", "tumour")
    window = (70.0, 350.0)
    spacing_mm = (5.0, 2.5, 2.5)
    patch = (32, 96, 96)
    overlap = 0.25
    blend = "gaussian"
    multiple = (4, 8, 8)
    min_lesion_ml = 0.2
    min_liver_ml = 100.0


RECIPE = LiverTumorSeg
