"""Grad-CAM secondary captures (highdicom SCImage, PS3.3 A.8.1).

For the most suspicious slices: the slice in the CT window of seed 000 (level 70, width
200), the Grad-CAM map put back where it was computed (jet colour map, blended), the ROI
outline and burned-in text (probability, class, model, "NOT FOR CLINICAL USE" where the
model was trained on phantoms). highdicom writes no source reference or geometry for SC,
so SourceImageSequence, BurnedInAnnotation, BodyPartExamined and PixelSpacing are added.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from mvi_node.recipes.ct_ap_resnet18.preprocess import CropBox, map_to_slice
from mvi_node.report.identity import MANUFACTURER, ModelIdentity, sc_uid

LEVEL, WIDTH = 70.0, 200.0
ALPHA = 0.45


def jet(values: np.ndarray) -> np.ndarray:
    """Matplotlib-style jet colour map for values in 0..1 -> uint8 RGB."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.concatenate([r, g, b], axis=-1) * 255).astype(np.uint8)


def windowed(ds: Dataset) -> np.ndarray:
    hu = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1) or 1) + float(
        ds.get("RescaleIntercept", 0) or 0
    )
    grey = np.clip((hu - (LEVEL - WIDTH / 2)) / WIDTH, 0, 1) * 255
    return grey.astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return mask & ~inner


def render(source: Dataset, cam_slice: np.ndarray, roi2d: np.ndarray | None, lines: list[str]) -> np.ndarray:
    """RGB uint8 image: windowed slice + blended heat map + ROI outline + text."""
    grey = windowed(source)
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    heat = jet(cam_slice).astype(np.float32)
    weight = (ALPHA * np.clip(cam_slice, 0, 1) ** 0.5)[..., None] * (cam_slice > 0.05)[..., None]
    rgb = rgb * (1 - weight) + heat * weight
    if roi2d is not None and roi2d.shape == grey.shape:
        rgb[_outline(roi2d.astype(bool))] = (255, 255, 255)
    image = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    y = 4
    for line in lines:
        draw.text((5, y + 1), line, fill=(0, 0, 0), font=font)
        draw.text((4, y), line, fill=(255, 255, 0), font=font)
        y += 12
    return np.asarray(image)


def build_scs(res: Any, model: ModelIdentity, sources: dict[str, Dataset], uids: dict[str, str], count: int) -> list[Dataset]:
    """Secondary captures for the ``count`` slices with the highest probability."""
    if res.gradcam is None or not res.slice_info or count <= 0:
        return []
    order = sorted(range(len(res.slice_info)), key=lambda i: -res.slice_info[i]["probability"])[:count]
    decision = "MVI present" if res.predicted_mvi else "MVI absent"
    out = []
    for rank, i in enumerate(order, start=1):
        info = res.slice_info[i]
        src = sources[info["sop_instance_uid"]]
        shape = (int(src.Rows), int(src.Columns))
        cam = map_to_slice(res.gradcam[i], CropBox(**info["crop_box"]), shape)
        roi2d = res.roi_mask[info["slice_index"]] if res.roi_mask is not None else None
        lines = [
            f"MVI probability {res.probability:.3f} (slice {info['probability']:.3f}) thr {res.threshold:.3f}",
            f"{decision} - Grad-CAM {rank}/{len(order)}",
            f"{model.recipe} {model.version} sha256 {model.sha256[:12]}",
        ]
        if model.synthetic:
            lines.append("NOT FOR CLINICAL USE - synthetic training data")
        pixels = render(src, cam, roi2d, lines)
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=src,
            pixel_array=pixels,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            series_instance_uid=uids["sc_series"],
            sop_instance_uid=sc_uid(uids["sc_prefix"], rank),
            series_number=9902,
            instance_number=rank,
            manufacturer=MANUFACTURER,
            pixel_spacing=tuple(float(v) for v in src.PixelSpacing) if "PixelSpacing" in src else None,
            patient_orientation=("L", "P"),
            series_description=("NOT FOR CLINICAL USE " if model.synthetic else "") + "MVI Grad-CAM",
        )
        ref = Dataset()
        ref.ReferencedSOPClassUID = src.SOPClassUID
        ref.ReferencedSOPInstanceUID = src.SOPInstanceUID
        sc.SourceImageSequence = [ref]
        sc.BurnedInAnnotation = "YES"
        sc.BodyPartExamined = "ABDOMEN"
        sc.DerivationDescription = f"Gradient-weighted class activation (Grad-CAM) of {model.label}"[:1024]
        derivation = Dataset()
        derivation.CodeValue, derivation.CodingSchemeDesignator = "130403", "DCM"
        derivation.CodeMeaning = "Gradient-weighted class activation"
        sc.DerivationCodeSequence = [derivation]
        sc.ImageComments = f"{decision}; probability {res.probability:.3f}; {model.intended_use}"[:10240]
        out.append(sc)
    return out


def sc_preview_png(sc: Dataset, path: Path) -> Path:
    """A PNG of a secondary capture (for the demo and for people without a viewer)."""
    Image.fromarray(sc.pixel_array.astype(np.uint8)).save(path)
    return Path(path)
