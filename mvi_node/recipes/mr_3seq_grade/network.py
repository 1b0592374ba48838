"""Seed 001 network (Sun et al. 2022): one CNN branch per MR sequence, features
concatenated, one FC, softmax over the MVI grades M0 / M1 / M2.

Branch (the paper's description): 7x7 conv 64 (stride 2) + max-pool, six bottleneck
blocks of width 64 and six of width 128 (expansion 4, so 256 then 512 channels, the
second stage at stride 2), global average pool -> 512-d feature. Input: one grey slice
(0..1) of 320 x 320.

Slices: each sequence gives three consecutive slices through the tumour's maximum
diameter; a training sample is one slice per sequence, so a patient has 3^3 = 27 slice
combinations. Because the head is linear in the concatenated features, the logits of
all 27 combinations are sums of per-slice branch terms: the network computes each
slice's branch once and forms the 27 combinations at the head (:meth:`combination_logits`),
in training (loss averaged over them) and in the exported graph (probabilities averaged).

Grad-CAM (Selvaraju et al. 2017) per branch, in the graph: for GAP -> linear, the
gradient of a logit w.r.t. the feature map A_k is w_k / Z, so the map is
ReLU(sum_k alpha_k A_k) with alpha the branch's slice of the FC weights. The explained
score is the MVI-present contrast (z_M1 + z_M2) / 2 - z_M0, linear in the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mvi_node.recipes.gradcam import normalise_map

SIZE = 320
GRADES = ("M0", "M1", "M2")
SEQUENCES = ("t1_pre", "portal_venous", "transitional")
SLICES = 3
FEATURES = 512


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), with a projection shortcut when the shape changes."""

    expansion = 4

    def __init__(self, inplanes: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out = width * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        nn.init.zeros_(self.bn3.weight)  # each block starts as identity: trains from scratch faster
        self.shortcut = None
        if stride != 1 or inplanes != out:
            self.shortcut = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class Branch(nn.Module):
    """One sequence's CNN: (N, 1, 320, 320) grey 0..1 -> feature maps (N, 512, 40, 40)."""

    def __init__(self, blocks: tuple[int, int] = (6, 6)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))
        layers, inplanes = [], 64
        for stage, (width, n) in enumerate(zip((64, 128), blocks)):
            for i in range(n):
                layers.append(Bottleneck(inplanes, width, stride=2 if (stage and i == 0) else 1))
                inplanes = width * Bottleneck.expansion
        self.blocks = nn.Sequential(*layers)
        # grey 0..1 -> roughly zero-mean unit-variance (no pretrained weights)
        self.register_buffer("mean", torch.tensor(0.35))
        self.register_buffer("std", torch.tensor(0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem((x - self.mean) / self.std))


class ThreeSequenceNet(nn.Module):
    """Three branches, concatenated 3 x 512 features, FC -> 3 grade logits."""

    def __init__(self, blocks: tuple[int, int] = (6, 6), dropout: float = 0.3) -> None:
        super().__init__()
        self.branches = nn.ModuleList(Branch(blocks) for _ in SEQUENCES)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(FEATURES * len(SEQUENCES), len(GRADES))

    def slice_maps(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per sequence (N, S, 320, 320) -> feature maps (N, S, 512, h, w)."""
        out = []
        for branch, x in zip(self.branches, inputs):
            n, s = x.shape[0], x.shape[1]
            maps = branch(x.reshape(n * s, 1, x.shape[2], x.shape[3]))
            out.append(maps.reshape(n, s, *maps.shape[1:]))
        return out

    def combination_logits(self, pooled: list[torch.Tensor]) -> torch.Tensor:
        """Per sequence pooled features (N, S, 512) -> logits of every slice combination
        (N, S, S, S, 3): entry [n, i, j, k] uses slice i of sequence 1, j of 2, k of 3."""
        w = self.fc.weight  # (3, 1536)
        terms = [torch.einsum("nsf,cf->nsc", p, w[:, b * FEATURES:(b + 1) * FEATURES]) for b, p in enumerate(pooled)]
        return (terms[0][:, :, None, None, :] + terms[1][:, None, :, None, :] + terms[2][:, None, None, :, :]
                + self.fc.bias)

    def forward(self, t1_pre: torch.Tensor, portal_venous: torch.Tensor, transitional: torch.Tensor) -> torch.Tensor:
        """Logits (N, 27, 3) of every slice combination."""
        maps = self.slice_maps([t1_pre, portal_venous, transitional])
        pooled = [self.dropout(m.mean(dim=(3, 4))) for m in maps]
        logits = self.combination_logits(pooled)
        return logits.reshape(logits.shape[0], -1, len(GRADES))


class ExportModule(nn.Module):
    """What ONNX holds. Inputs ``t1_pre``, ``portal_venous``, ``transitional``: (N, 3,
    320, 320) grey 0..1, three consecutive slices each. Outputs ``class_probabilities``
    (N, 3) averaged over the 27 combinations, ``probability`` (N,) = P(M1) + P(M2), and
    ``gradcam`` (N, 3, 320, 320): per sequence, the map of its middle slice."""

    def __init__(self, net: ThreeSequenceNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, t1_pre: torch.Tensor, portal_venous: torch.Tensor, transitional: torch.Tensor):
        maps = self.net.slice_maps([t1_pre, portal_venous, transitional])
        pooled = [m.mean(dim=(3, 4)) for m in maps]
        logits = self.net.combination_logits(pooled)
        probs = torch.softmax(logits.reshape(logits.shape[0], -1, len(GRADES)), dim=2).mean(dim=1)
        w = self.net.fc.weight
        contrast = (w[1] + w[2]) / 2 - w[0]
        cams = []
        for b, m in enumerate(maps):
            mid = m[:, SLICES // 2]  # (N, 512, h, w)
            alpha = contrast[b * FEATURES:(b + 1) * FEATURES] / (mid.shape[2] * mid.shape[3])
            cam = F.relu(torch.einsum("k,nkij->nij", alpha, mid)).unsqueeze(1)
            cam = F.interpolate(cam, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
            cams.append(normalise_map(cam)[:, 0])
        return probs, probs[:, 1] + probs[:, 2], torch.stack(cams, dim=1)
