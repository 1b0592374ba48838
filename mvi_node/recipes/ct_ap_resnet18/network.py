"""Seed 000 network: 2D ResNet-18 (MONAI), clinical factors through a 9-unit FC
concatenated into the last FC (2 classes), and Grad-CAM computed in the graph.

Grad-CAM (Selvaraju et al. 2017, §3.1): for layer4 -> global average pool -> linear,
d y_c / d A_k(i,j) = w_ck / Z, so alpha_k = w_ck / Z and the map is
ReLU(sum_k alpha_k A_k). Only the image-feature part of the last FC multiplies A_k
(the clinical part does not depend on A). No autograd is needed, so the exported ONNX
graph returns the map beside the probability.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets import resnet18
from torch import nn

from mvi_node.recipes.gradcam import normalise_map

from mvi_node.recipes.ct_ap_resnet18.preprocess import SIZE

N_CLINICAL = 9  # sex, age, MTD, AFP, Child-Pugh A/B/C (one-hot), HBsAg, HCV
CLINICAL_UNITS = 9
POSITIVE = 1  # class index of MVI present


class MviResNet18(nn.Module):
    """ResNet-18 backbone; ``clinical=True`` adds the seed's 9-unit clinical branch."""

    def __init__(self, clinical: bool) -> None:
        super().__init__()
        self.clinical = clinical
        self.backbone = resnet18(spatial_dims=2, n_input_channels=3, num_classes=2, conv1_t_stride=2)
        self.backbone.fc = nn.Identity()
        # grey/255 in 0..1 -> roughly zero-mean unit-variance (no ImageNet weights here)
        self.register_buffer("mean", torch.tensor(0.45))
        self.register_buffer("std", torch.tensor(0.25))
        if clinical:
            self.clin_fc = nn.Sequential(nn.Linear(N_CLINICAL, CLINICAL_UNITS), nn.ReLU())
        self.fc = nn.Linear(512 + (CLINICAL_UNITS if clinical else 0), 2)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        x = (image - self.mean) / self.std
        x = b.maxpool(b.act(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))

    def head(self, feats: torch.Tensor, clinical: torch.Tensor | None) -> torch.Tensor:
        pooled = feats.mean(dim=(2, 3))
        if self.clinical:
            pooled = torch.cat([pooled, self.clin_fc(clinical)], dim=1)
        return self.fc(pooled)

    def forward(self, image: torch.Tensor, clinical: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (N, 2)."""
        return self.head(self.features(image), clinical)


def gradcam(net: MviResNet18, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM of the MVI class from layer4's ``feats``: (the weighted sum before the ReLU,
    (N, h, w); the map after it, upsampled to the input, (N, 1, SIZE, SIZE), before min-max)."""
    z = feats.shape[2] * feats.shape[3]
    w = net.fc.weight[POSITIVE, :512] / z
    pre = torch.einsum("k,nkij->nij", w, feats)
    cam = F.interpolate(F.relu(pre).unsqueeze(1), size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return pre, cam


class ExportWrapper(nn.Module):
    """What ONNX holds: ``probability`` (N,) of MVI and ``gradcam`` (N, 256, 256) in 0..1."""

    def __init__(self, net: MviResNet18) -> None:
        super().__init__()
        self.net = net

    def _outputs(self, image: torch.Tensor, clinical: torch.Tensor | None):
        feats = self.net.features(image)
        prob = torch.softmax(self.net.head(feats, clinical), dim=1)[:, POSITIVE]
        return prob, normalise_map(gradcam(self.net, feats)[1])[:, 0]


class ClinicalExport(ExportWrapper):
    def forward(self, image: torch.Tensor, clinical: torch.Tensor):
        return self._outputs(image, clinical)


class ImageOnlyExport(ExportWrapper):
    def forward(self, image: torch.Tensor):
        return self._outputs(image, None)


def export_module(net: MviResNet18) -> ExportWrapper:
    return ClinicalExport(net) if net.clinical else ImageOnlyExport(net)
