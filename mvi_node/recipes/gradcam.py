"""What the recipes' exported graphs share for their in-graph Grad-CAM (torch: training
and export only, never imported by the serving path)."""

from __future__ import annotations

import torch


def normalise_map(cam: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-map min-max to 0..1 over every axis but the first (NOT MONAI's default, which
    inverts the map)."""
    flat = cam.flatten(1)
    lo = flat.min(1).values.view(-1, *[1] * (cam.dim() - 1))
    hi = flat.max(1).values.view(-1, *[1] * (cam.dim() - 1))
    return (cam - lo) / (hi - lo + eps)
