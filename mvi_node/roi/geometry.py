"""Patient-coordinate geometry of image series and 2D masks (PS3.3 C.7.6.2).

ImageOrientationPatient gives the row (column-index) and column (row-index) direction
cosines, ImagePositionPatient the centre of the first pixel, PixelSpacing the
row/column spacing. An annotation drawn on any series of the same frame of reference is
brought onto the target series by nearest-neighbour resampling in SimpleITK, which is
exact (a copy) when the planes coincide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset

from mvi_node.common.frames import frame_number, lookup, view_key


def _vec(ds: Dataset, kw: str, n: int) -> np.ndarray | None:
    value = ds.get(kw)
    if value is None or len(value) != n:
        return None
    return np.asarray([float(v) for v in value], dtype=float)


@dataclass
class PlaneMask:
    """A 2D mask on one image plane (rows x cols), in patient coordinates."""

    mask: np.ndarray
    position: np.ndarray  # IPP of pixel (0, 0)
    orientation: np.ndarray  # IOP (6)
    spacing_rc: tuple[float, float]
    thickness: float | None = None
    sop_uid: str | None = None  # the image it was drawn on, when known
    frame_uid: str | None = None
    frame: int | None = None  # its ReferencedFrameNumber when that image is multi-frame


@dataclass
class SeriesGeometry:
    """Slices of one series sorted along the normal; volume arrays use this order."""

    datasets: list[Dataset]
    positions: np.ndarray  # (N, 3)
    orientation: np.ndarray  # (6)
    spacing_rc: tuple[float, float]
    shape: tuple[int, int, int]
    frame_uid: str | None
    #: slice of each image by :func:`mvi_node.common.frames.image_key` (SOP UID, plus
    #: ``#frame`` for a frame of an Enhanced multi-frame instance)
    sop_index: dict[str, int] = field(default_factory=dict)

    def index_of(self, sop_uid: str | None, frame: int | None = None) -> int | None:
        """Slice of the image (SOP Instance UID, ReferencedFrameNumber), None when not in the series."""
        return lookup(self.sop_index, sop_uid or "", frame)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.orientation[:3], self.orientation[3:])

    @property
    def slice_gap(self) -> float:
        if len(self.positions) > 1:
            return float(np.median(np.diff(self.positions @ self.normal)))
        return float(self.datasets[0].get("SliceThickness") or 1.0)

    def reference(self) -> sitk.Image:
        """Empty SimpleITK image with this grid (x = column, y = row, z = slice)."""
        img = sitk.Image([self.shape[2], self.shape[1], self.shape[0]], sitk.sitkUInt8)
        img.SetSpacing((self.spacing_rc[1], self.spacing_rc[0], abs(self.slice_gap)))
        img.SetOrigin(tuple(float(v) for v in self.positions[0]))
        direction = np.column_stack([self.orientation[:3], self.orientation[3:], self.normal])
        img.SetDirection(tuple(direction.flatten()))
        return img


def series_geometry(datasets: list[Dataset]) -> SeriesGeometry:
    """Sort single-frame images (or the frame views of Enhanced multi-frame instances,
    :func:`mvi_node.common.frames.frame_datasets`) of one plane orientation along their normal."""
    if not datasets:
        raise ValueError("empty series")
    iop = _vec(datasets[0], "ImageOrientationPatient", 6)
    spacing = _vec(datasets[0], "PixelSpacing", 2)
    if iop is None or spacing is None:
        raise ValueError("series without ImageOrientationPatient/PixelSpacing")
    normal = np.cross(iop[:3], iop[3:])
    pos = [_vec(ds, "ImagePositionPatient", 3) for ds in datasets]
    if any(p is None for p in pos):
        raise ValueError("image without ImagePositionPatient")
    order = np.argsort([float(p @ normal) for p in pos], kind="stable")
    sorted_ds = [datasets[i] for i in order]
    ds0 = sorted_ds[0]
    geo = SeriesGeometry(
        datasets=sorted_ds,
        positions=np.stack([pos[i] for i in order]),
        orientation=iop,
        spacing_rc=(float(spacing[0]), float(spacing[1])),
        shape=(len(sorted_ds), int(ds0.Rows), int(ds0.Columns)),
        frame_uid=str(ds0.get("FrameOfReferenceUID", "") or "") or None,
    )
    geo.sop_index = {view_key(ds): i for i, ds in enumerate(sorted_ds)}
    return geo


def plane_of(ds: Dataset) -> PlaneMask:
    """Geometry of one image (mask left empty) for shapes drawn on it."""
    iop = _vec(ds, "ImageOrientationPatient", 6)
    ipp = _vec(ds, "ImagePositionPatient", 3)
    sp = _vec(ds, "PixelSpacing", 2)
    if iop is None or ipp is None or sp is None:
        raise ValueError(f"image {ds.get('SOPInstanceUID', '')} has no plane geometry")
    return PlaneMask(np.zeros((int(ds.Rows), int(ds.Columns)), bool), ipp, iop, (float(sp[0]), float(sp[1])),
                     float(ds.get("SliceThickness") or 0) or None, str(ds.SOPInstanceUID),
                     str(ds.get("FrameOfReferenceUID", "") or "") or None, frame_number(ds))


def planes_to_series(planes: list[PlaneMask], target: SeriesGeometry) -> np.ndarray:
    """OR of ``planes`` on the target grid (slices, rows, cols), bool.

    A plane drawn on a target image is copied; any other plane of the same frame of
    reference is resampled (nearest neighbour) with its slab = its thickness, else the
    target slice gap.
    """
    out = np.zeros(target.shape, bool)
    ref = None
    for p in planes:
        idx = target.index_of(p.sop_uid, p.frame)
        if idx is not None and p.mask.shape == target.shape[1:]:
            out[idx] |= p.mask.astype(bool)
            continue
        if not p.mask.any():
            continue
        ref = ref or target.reference()
        src = sitk.GetImageFromArray(p.mask.astype(np.uint8)[None])
        normal = np.cross(p.orientation[:3], p.orientation[3:])
        # one voxel deep: SimpleITK treats continuous index -0.5..0.5 as inside, a centred slab
        src.SetSpacing((p.spacing_rc[1], p.spacing_rc[0], float(p.thickness or abs(target.slice_gap))))
        src.SetOrigin(tuple(float(v) for v in p.position))
        src.SetDirection(tuple(np.column_stack([p.orientation[:3], p.orientation[3:], normal]).flatten()))
        res = sitk.Resample(src, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        out |= sitk.GetArrayFromImage(res).astype(bool)
    return out


def world_to_index(points: np.ndarray, target: SeriesGeometry) -> np.ndarray:
    """Patient-coordinate points (n, 3) -> continuous (column, row, slice) of ``target``,
    columns/rows in image-relative pixel coordinates (PS3.3 C.10.5.1.2: 0.0 is the
    top-left corner of the top-left pixel, so a pixel centre sits at index + 0.5)."""
    d = np.asarray(points, float) - target.positions[0]
    col = d @ target.orientation[:3] / target.spacing_rc[1] + 0.5
    row = d @ target.orientation[3:] / target.spacing_rc[0] + 0.5
    k = d @ target.normal / (target.slice_gap or 1.0)
    return np.stack([col, row, k], axis=1)


def shape_mask(shape_rc: tuple[int, int], graphic_type: str, xy: np.ndarray) -> np.ndarray:
    """Rasterise a planar graphic given in image-relative pixel coordinates (column, row).

    CIRCLE: centre, point on the circle. ELLIPSE: major-axis end points, then minor.
    POLYGON / closed POLYLINE: vertices (even-odd rule). Pixels whose centre is inside.
    """
    rows, cols = np.mgrid[0:shape_rc[0], 0:shape_rc[1]]
    px, py = cols + 0.5, rows + 0.5
    xy = np.asarray(xy, float).reshape(-1, 2)
    kind = graphic_type.upper()
    if kind == "CIRCLE":
        r2 = ((xy[1] - xy[0]) ** 2).sum()
        return (px - xy[0, 0]) ** 2 + (py - xy[0, 1]) ** 2 <= r2
    if kind == "ELLIPSE":
        c = (xy[0] + xy[1]) / 2
        a, b = np.linalg.norm(xy[1] - xy[0]) / 2, np.linalg.norm(xy[3] - xy[2]) / 2
        u = (xy[1] - xy[0]) / (2 * a)
        v = np.array([-u[1], u[0]])
        dx, dy = px - c[0], py - c[1]
        return ((dx * u[0] + dy * u[1]) / a) ** 2 + ((dx * v[0] + dy * v[1]) / b) ** 2 <= 1.0
    if kind in ("POLYGON", "POLYLINE", "CLOSED_PLANAR"):
        inside = np.zeros(shape_rc, bool)
        x0, y0 = xy[:, 0], xy[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        for xa, ya, xb, yb in zip(x0, y0, x1, y1):
            if ya == yb:
                continue
            crosses = (py >= min(ya, yb)) & (py < max(ya, yb))
            xcross = xa + (py - ya) * (xb - xa) / (yb - ya)
            inside ^= crosses & (px < xcross)
        return inside
    raise ValueError(f"unsupported graphic type {graphic_type}")
