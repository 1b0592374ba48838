"""The residual 3D U-Net (MONAI) every segmentation recipe trains, its ONNX wrapper and export.

Training only (torch). Shared so the CT and MR segmenters (``liver_tumor_seg``,
``liver_tumor_seg_mr``) build and export the same way without one recipe importing
another. The graph's contract is :class:`mvi_node.infer.segmentation.SegmentationRecipe`'s:
input ``image`` (1, channels, z, y, x), output ``probabilities`` (softmax in the graph),
spatial axes dynamic, opset 17.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from monai.networks.layers import Norm
from monai.networks.nets import UNet

OPSET = 17
CHANNELS = (16, 32, 64, 128)
#: the first level keeps the slice axis (thick slices: 4-5 mm against 2.5 mm in-plane)
STRIDES = ((1, 2, 2), (2, 2, 2), (2, 2, 2))
RES_UNITS = 2


def build_unet(in_channels: int = 1, classes: int = 3, channels: Sequence[int] = CHANNELS,
               strides: Sequence[Sequence[int]] = STRIDES, res_units: int = RES_UNITS) -> UNet:
    """Residual U-Net with batch norm and PReLU (MONAI's defaults)."""
    return UNet(spatial_dims=3, in_channels=in_channels, out_channels=classes, channels=tuple(channels),
                strides=tuple(tuple(s) for s in strides), num_res_units=res_units, norm=Norm.BATCH)


def describe_unet(channels: Sequence[int] = CHANNELS, strides: Sequence[Sequence[int]] = STRIDES,
                  res_units: int = RES_UNITS) -> str:
    return (f"MONAI UNet, spatial_dims 3, channels {tuple(channels)}, strides {tuple(tuple(s) for s in strides)}, "
            f"residual units {res_units} per level, batch norm, PReLU")


class WithSoftmax(torch.nn.Module):
    """What the graph serves: per-class probabilities."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(image), dim=1)


def export_onnx(net: torch.nn.Module, path: Path | str, patch=(32, 96, 96), opset: int = OPSET,
                channels: int = 1) -> Path:
    """``image`` (1, channels, z, y, x) -> ``probabilities``; batch and spatial axes dynamic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = WithSoftmax(net.eval()).eval()
    x = torch.rand(1, channels, *patch)
    axes = {"image": {0: "N", 2: "D", 3: "H", 4: "W"}, "probabilities": {0: "N", 2: "D", 3: "H", 4: "W"}}
    torch.onnx.export(module, (x,), str(path), input_names=["image"], output_names=["probabilities"],
                      dynamic_axes=axes, opset_version=opset, dynamo=False)
    return path
