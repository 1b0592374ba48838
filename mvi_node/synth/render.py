"""Labels + lesion fields + a per-phase contrast table -> one image volume.

CT and MR share this so a tumour, its capsule and its MVI signs land on the same
voxels in every phase and sequence; only the tables differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mvi_node.synth.anatomy import L, N_LABELS, smooth_inplane
from mvi_node.synth.lesions import LesionFields

TUMOR_HOST = np.zeros(N_LABELS, bool)
TUMOR_HOST[[int(L.LIVER), int(L.FAT), int(L.HEPATIC_VEIN), int(L.PORTAL), int(L.GALLBLADDER)]] = True


@dataclass(frozen=True)
class Contrast:
    """Values of one phase/sequence: a label table and the lesion overlays."""

    lut: np.ndarray  # value per label
    tumor: float
    necrosis: float
    capsule: float
    peri_enh: float = 0.0  # added at full sign strength
    arteries: float = 0.0
    halo: float = 0.0
    hbp_rim: float = 0.0
    texture: float = 0.0


def tumor_masks(labels: np.ndarray, fields: list[LesionFields]) -> list[np.ndarray]:
    """Per lesion, the boolean tumour mask on its crop, restricted to host tissue."""
    return [f.tumor & TUMOR_HOST[labels[f.sl]] for f in fields]


def truth_labels(labels: np.ndarray, fields: list[LesionFields | None]) -> np.ndarray:
    """Lesion index map (0 = none, k = lesion k, 1-based) on the labels' grid."""
    out = np.zeros(labels.shape, np.uint8)
    for k, f in enumerate(fields, start=1):
        if f is None:
            continue
        m = f.tumor & TUMOR_HOST[labels[f.sl]]
        out[f.sl][m] = k
    return out


def render(labels: np.ndarray, fields: list[LesionFields | None], c: Contrast, rng: np.random.Generator,
           noise_sd: float, smooth: bool = True) -> np.ndarray:
    """Image volume (float32) for contrast ``c`` with Gaussian noise ``noise_sd``."""
    vol = c.lut.astype(np.float32)[labels]
    for f in fields:
        if f is None:
            continue
        sub = vol[f.sl]
        lab = labels[f.sl]
        liver = (lab == int(L.LIVER)) & ~f.tumor
        tmask = f.tumor & TUMOR_HOST[lab]
        tval = c.tumor + c.texture * f.texture + c.arteries * f.arteries
        tval = tval + (c.necrosis - c.tumor) * f.necrosis
        sub[tmask] = np.broadcast_to(tval, sub.shape)[tmask]
        rim = c.capsule * f.capsule + (1 - f.capsule) * sub  # capsule replaces, weighted by strength
        rim = rim + c.halo * f.halo + c.peri_enh * f.peri_enh + c.hbp_rim * f.hbp_rim
        sub[liver] = rim[liver]
    if smooth:
        vol = smooth_inplane(vol)
    if noise_sd > 0:
        vol += rng.standard_normal(vol.shape, dtype=np.float32) * np.float32(noise_sd)
    return vol
