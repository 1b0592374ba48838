"""Grad-CAM secondary captures (highdicom SCImage, PS3.3 A.8.1).

For the most suspicious slices: the slice in a CT window (seed 000: level 70, width
200), the Grad-CAM map placed back on the slice through its crop box (jet colour map,
blended), the ROI outline and burned-in text (probability, class, model, "NOT FOR
CLINICAL USE" for a model trained on synthetic data). highdicom writes no source
reference or geometry for SC, so SourceImageSequence, BurnedInAnnotation,
BodyPartExamined, PixelSpacing and the derivation (DCM 130403, CID 217) are added here.
Small matrices are enlarged (integer factor, PixelSpacing adjusted) so text stays legible.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from mvi_node.common.frames import frame_number, frame_pixels, view_key
from mvi_node.report.inputs import LesionResult, ReportInput, SliceResult
from mvi_node.report.uids import SC_SERIES_NUMBER, ResultUIDs

ALPHA = 0.5
MIN_SIZE = 512


def jet(values: np.ndarray) -> np.ndarray:
    """Matplotlib-style jet colour map for values in 0..1 -> uint8 RGB (..., 3)."""
    v = np.clip(np.asarray(values, np.float32), 0.0, 1.0)[..., None]
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.concatenate([r, g, b], axis=-1) * 255).round().astype(np.uint8)


def windowed(ds: Dataset, level: float = 70.0, width: float = 200.0) -> np.ndarray:
    """The slice as grey 0..255 in a linear window (HU through the modality LUT); a frame
    view of an Enhanced instance reads its frame (``mvi_node.common.frames``)."""
    hu = frame_pixels(ds).astype(np.float32) * float(ds.get("RescaleSlope", 1) or 1) + float(
        ds.get("RescaleIntercept", 0) or 0)
    grey = np.clip((hu - (level - width / 2)) / width, 0, 1) * 255
    return grey.round().astype(np.uint8)


def series_window(ds: Dataset, default: tuple[float, float] = (70.0, 200.0)) -> tuple[float, float]:
    """The slice's own (first) window, else ``default``."""
    def first(value):
        return value[0] if isinstance(value, (list, tuple, MultiValue)) else value

    try:
        centre, width = float(first(ds.WindowCenter)), float(first(ds.WindowWidth))
    except (AttributeError, TypeError, ValueError, IndexError):
        return default
    return (centre, width) if width > 0 else default


def patient_orientation(ds: Dataset) -> tuple[str, str]:
    """PatientOrientation (row, column directions) from ImageOrientationPatient; axial by default."""
    try:
        iop = [float(v) for v in ds.ImageOrientationPatient]
    except (AttributeError, TypeError, ValueError):
        return ("L", "P")
    letters = (("R", "L"), ("A", "P"), ("F", "H"))

    def label(v: list[float]) -> str:
        order = sorted(range(3), key=lambda i: -abs(v[i]))
        return "".join(letters[i][v[i] > 0] for i in order if abs(v[i]) > 0.25)[:3] or "L"

    return (label(iop[:3]), label(iop[3:6]))


def cam_on_slice(cam: np.ndarray, crop_box: tuple[float, float, float, float] | None,
                 shape: tuple[int, int]) -> np.ndarray:
    """A CAM on the slice grid: as is when it already has the slice's shape, else the
    crop-space map resampled (bilinear) into ``crop_box`` = (row0, col0, row1, col1),
    0 outside the box."""
    cam = np.asarray(cam, np.float32)
    if crop_box is None:
        if cam.shape != tuple(shape):
            raise ValueError(f"CAM shape {cam.shape} differs from the slice {tuple(shape)} and no crop box given")
        return np.clip(cam, 0, 1)
    row0, col0, row1, col1 = map(float, crop_box)
    h, w = cam.shape
    rr = (np.arange(shape[0]) + 0.5 - row0) / max(row1 - row0, 1e-6) * h - 0.5
    cc = (np.arange(shape[1]) + 0.5 - col0) / max(col1 - col0, 1e-6) * w - 0.5
    inside = ((rr >= -0.5) & (rr <= h - 0.5))[:, None] & ((cc >= -0.5) & (cc <= w - 0.5))[None, :]
    r = np.clip(rr, 0, h - 1)
    c = np.clip(cc, 0, w - 1)
    r0 = np.floor(r).astype(int)
    c0 = np.floor(c).astype(int)
    r1, c1 = np.minimum(r0 + 1, h - 1), np.minimum(c0 + 1, w - 1)
    fr, fc = (r - r0)[:, None], (c - c0)[None, :]
    top = cam[r0][:, c0] * (1 - fc) + cam[r0][:, c1] * fc
    bottom = cam[r1][:, c0] * (1 - fc) + cam[r1][:, c1] * fc
    out = top * (1 - fr) + bottom * fr
    return np.where(inside, np.clip(out, 0, 1), 0).astype(np.float32)


def _outline(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, bool)
    inner = mask.copy()
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return mask & ~inner


def render(grey: np.ndarray, cam: np.ndarray | None, roi_mask: np.ndarray | None,
           roi_polyline: np.ndarray | None, lines: list[str], scale: int = 1) -> np.ndarray:
    """RGB uint8: grey slice + blended jet heat map + ROI outline, enlarged ``scale``
    times, + text. ``roi_polyline`` (N, 2) in (column, row) image-relative pixels."""
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    if cam is not None:
        weight = (ALPHA * np.sqrt(np.clip(cam, 0, 1)) * (cam > 0.05))[..., None]
        rgb = rgb * (1 - weight) + jet(cam).astype(np.float32) * weight
    if roi_mask is not None and roi_mask.shape == grey.shape:
        rgb[_outline(roi_mask)] = (255, 255, 255)
    image = Image.fromarray(rgb.clip(0, 255).round().astype(np.uint8))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    if roi_polyline is not None and len(roi_polyline) > 1:
        draw.line([(float(c) * scale, float(r) * scale) for c, r in roi_polyline], fill=(255, 255, 255), width=1)
    size = max(10, image.width // 48)
    font = ImageFont.load_default(size=size)
    y = 4
    for line in lines:
        draw.text((5, y + 1), line, fill=(0, 0, 0), font=font)
        draw.text((4, y), line, fill=(255, 255, 0), font=font)
        y += size + 3
    return np.asarray(image)


def caption(inp: ReportInput, lesion: LesionResult, sl: SliceResult, rank: int, total: int) -> list[str]:
    model = inp.model
    decision = inp.endpoint.present if lesion.predicted_mvi else inp.endpoint.absent
    lines = [
        f"{lesion.tracking_id}: {inp.endpoint.title} probability {lesion.probability:.3f} (threshold {lesion.threshold:.3f})",
        f"{decision} - slice p {sl.probability:.3f} - Grad-CAM {rank}/{total}" + (f" - {sl.label}" if sl.label else ""),
        f"{model.label} sha256 {model.sha256[:12]}" + (" image-only" if inp.image_only else "")
        + (" calibrated" if model.calibration else "") + (f" {model.reduced_precision}" if model.reduced_precision else ""),
    ]
    if model.synthetic:
        lines.append("NOT FOR CLINICAL USE - synthetic training data")
    return lines


def most_suspicious(inp: ReportInput, n: int) -> list[tuple[LesionResult, SliceResult]]:
    pairs = [(l, s) for l in inp.lesions for s in l.slices]
    pairs.sort(key=lambda p: (-float(p[1].probability), str(p[1].source.SOPInstanceUID)))
    return pairs[:max(0, n)]


def build_scs(inp: ReportInput, uids: ResultUIDs, n: int = 3) -> list[Dataset]:
    """Secondary captures of the ``n`` slices with the highest probability."""
    if not inp.evaluated:
        return []
    chosen = most_suspicious(inp, n)
    out = []
    for rank, (lesion, sl) in enumerate(chosen, start=1):
        src = sl.source
        shape = (int(src.Rows), int(src.Columns))
        cam = cam_on_slice(sl.cam, sl.crop_box, shape) if sl.cam is not None else None
        polyline = None
        if lesion.roi_region is not None and lesion.key_slice is not None and \
                view_key(lesion.key_slice) == view_key(src):
            polyline = lesion.roi_region.closed_polyline()
        scale = max(1, MIN_SIZE // max(shape))
        level, width = inp.window if inp.window is not None else series_window(src)
        pixels = render(windowed(src, level, width), cam, sl.roi_mask, polyline,
                        caption(inp, lesion, sl, rank, len(chosen)), scale)
        spacing = None
        if "PixelSpacing" in src:
            spacing = tuple(float(v) / scale for v in src.PixelSpacing)
        model = inp.model
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=src,
            pixel_array=pixels,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            series_instance_uid=uids.sc_series,
            sop_instance_uid=uids.sc(view_key(src)),  # one capture per frame of a multi-frame source
            series_number=SC_SERIES_NUMBER,
            instance_number=rank,
            manufacturer=model.manufacturer,
            pixel_spacing=spacing,
            patient_orientation=patient_orientation(src),
            series_description=(("NOT FOR CLINICAL USE " if model.synthetic else "") + f"{inp.endpoint.title} Grad-CAM")[:64],
        )
        ref = Dataset()
        ref.ReferencedSOPClassUID = src.SOPClassUID
        ref.ReferencedSOPInstanceUID = src.SOPInstanceUID
        if frame_number(src) is not None:
            ref.ReferencedFrameNumber = frame_number(src)
        sc.SourceImageSequence = [ref]
        sc.BurnedInAnnotation = "YES"
        sc.BodyPartExamined = inp.body_part
        sc.DerivationDescription = f"Gradient-weighted class activation (Grad-CAM) of {model.label}"[:1024]
        derivation = Dataset()
        derivation.CodeValue, derivation.CodingSchemeDesignator = "130403", "DCM"
        derivation.CodeMeaning = "Gradient-weighted class activation"
        sc.DerivationCodeSequence = [derivation]
        decision = inp.endpoint.present if lesion.predicted_mvi else inp.endpoint.absent
        sc.ImageComments = f"{decision}; probability {lesion.probability:.3f}; {model.intended_use}"[:10240]
        sc.SpecificCharacterSet = "ISO_IR 192"
        out.append(sc)
    return out


def sc_preview_png(sc: Dataset, path: Path | str) -> Path:
    """A PNG of a secondary capture (for the demo and for people without a viewer)."""
    Image.fromarray(np.asarray(sc.pixel_array, np.uint8)).save(path)
    return Path(path)
