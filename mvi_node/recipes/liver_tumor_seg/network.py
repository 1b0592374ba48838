"""The residual 3D U-Net (MONAI) and its ONNX wrapper (softmax in the graph). Training only."""

from __future__ import annotations

import torch
from monai.networks.layers import Norm
from monai.networks.nets import UNet

CHANNELS = (16, 32, 64, 128)
STRIDES = ((1, 2, 2), (2, 2, 2), (2, 2, 2))
RES_UNITS = 2


def build(in_channels: int = 1, classes: int = 3) -> UNet:
    """Residual U-Net: 4 levels, the first keeps the 5 mm slices (stride 1 along z)."""
    return UNet(spatial_dims=3, in_channels=in_channels, out_channels=classes, channels=CHANNELS, strides=STRIDES,
                num_res_units=RES_UNITS, norm=Norm.BATCH)


def describe() -> str:
    return (f"MONAI UNet, spatial_dims 3, channels {CHANNELS}, strides {STRIDES}, residual units {RES_UNITS} "
            f"per level, batch norm, PReLU")


class WithSoftmax(torch.nn.Module):
    """What the graph serves: per-class probabilities."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(image), dim=1)
