"""The residual 3D U-Net (MONAI) and its ONNX wrapper (softmax in the graph). Training only.

The network itself is shared with the MR segmenter (:mod:`mvi_node.recipes.seg_network`)."""

from __future__ import annotations

from monai.networks.nets import UNet

from mvi_node.recipes.seg_network import CHANNELS, RES_UNITS, STRIDES, WithSoftmax, build_unet, describe_unet

__all__ = ["CHANNELS", "RES_UNITS", "STRIDES", "WithSoftmax", "build", "describe"]


def build(in_channels: int = 1, classes: int = 3) -> UNet:
    """Residual U-Net: 4 levels, the first keeps the 5 mm slices (stride 1 along z)."""
    return build_unet(in_channels, classes, CHANNELS, STRIDES, RES_UNITS)


def describe() -> str:
    return describe_unet(CHANNELS, STRIDES, RES_UNITS)
