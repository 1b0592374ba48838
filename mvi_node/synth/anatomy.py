"""An analytic abdomen: organs as ellipsoids and tubes in patient millimetres (LPS).

Defining anatomy in millimetres, not voxels, lets every series of an exam (5 mm, thin,
MR 4/6 mm, monitoring level, reformats) be rendered on its own grid and still agree
with the others and with the truth mask, as real scans of one patient do.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class L(IntEnum):
    """Tissue labels; CT and MR map each to a value per phase."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    LIVER = 3
    AORTA = 4
    IVC = 5
    PORTAL = 6
    HEPATIC_VEIN = 7
    KIDNEY_CORTEX = 8
    KIDNEY_MEDULLA = 9
    SPLEEN = 10
    BONE_CORTEX = 11
    BONE_MARROW = 12
    GALLBLADDER = 13
    PANCREAS = 14
    BOWEL = 15
    GAS = 16
    LUNG = 17


N_LABELS = len(L)
FOV_MM = 380.0
Z_TOP_MM = 100.0
COVERAGE_MM = 200.0


@dataclass(frozen=True)
class Grid:
    """Axial grid: ``zs`` from head to feet, rows along +y (posterior), cols along +x."""

    xs: np.ndarray
    ys: np.ndarray
    zs: np.ndarray
    thickness: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.zs), len(self.ys), len(self.xs))

    @property
    def pixel_spacing(self) -> tuple[float, float]:
        return (float(self.ys[1] - self.ys[0]), float(self.xs[1] - self.xs[0]))

    @property
    def slice_spacing(self) -> float:
        return float(self.zs[0] - self.zs[1]) if len(self.zs) > 1 else self.thickness

    def position(self, k: int) -> list[float]:
        """ImagePositionPatient (centre of the first pixel) of slice ``k``."""
        return [round(float(self.xs[0]), 4), round(float(self.ys[0]), 4), round(float(self.zs[k]), 4)]


def axial_grid(matrix: int, thickness: float, fov: float = FOV_MM,
               z_top: float = Z_TOP_MM, coverage: float = COVERAGE_MM) -> Grid:
    """Contiguous axial slices of ``thickness`` mm covering ``coverage`` mm from ``z_top``."""
    px = fov / matrix
    xs = -fov / 2 + px * (np.arange(matrix) + 0.5)
    n = max(1, int(round(coverage / thickness)))
    zs = z_top - thickness * (np.arange(n) + 0.5)
    return Grid(xs.astype(np.float64), xs.copy(), zs.astype(np.float64), thickness)


@dataclass(frozen=True)
class Body:
    """Per-patient anatomy parameters (size, organ positions)."""

    scale: float
    body_ax: float
    body_ay: float
    fat_mm: float
    liver_c: tuple[float, float, float]
    liver_r: tuple[float, float, float]
    left_lobe_c: tuple[float, float, float]
    left_lobe_r: tuple[float, float, float]
    kidney_z: tuple[float, float]
    hilum: tuple[float, float, float]
    monitor_z: float  # level of the bolus-tracking ROI (celiac trunk)


def draw_body(rng: np.random.Generator) -> Body:
    s = float(rng.uniform(0.9, 1.1))
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    return Body(
        scale=s,
        body_ax=150 * s * u(0.95, 1.08),
        body_ay=112 * s * u(0.95, 1.08),
        fat_mm=u(10, 30),
        liver_c=(-58 * s, u(-8, 8), u(22, 34)),
        liver_r=(78 * s * u(0.9, 1.1), 82 * s * u(0.9, 1.05), 70 * u(0.9, 1.1)),
        left_lobe_c=(8 * s, -42 * s, u(38, 48)),
        left_lobe_r=(55 * s * u(0.8, 1.1), 32 * s, 40 * u(0.85, 1.1)),
        kidney_z=(u(-55, -40), u(-42, -28)),
        hilum=(-38 * s, 4.0, u(10, 20)),
        monitor_z=u(30, 45),
    )


def _axis_range(coords: np.ndarray, lo: float, hi: float) -> slice | None:
    idx = np.nonzero((coords >= lo) & (coords <= hi))[0]
    if idx.size == 0:
        return None
    return slice(int(idx.min()), int(idx.max()) + 1)


def _block(grid: Grid, lo: np.ndarray, hi: np.ndarray):
    sz = _axis_range(grid.zs, lo[2], hi[2])
    sy = _axis_range(grid.ys, lo[1], hi[1])
    sx = _axis_range(grid.xs, lo[0], hi[0])
    if sz is None or sy is None or sx is None:
        return None
    Z = grid.zs[sz][:, None, None]
    Y = grid.ys[sy][None, :, None]
    X = grid.xs[sx][None, None, :]
    return (sz, sy, sx), X, Y, Z


def _paint(labels: np.ndarray, sl, inside: np.ndarray, value: int, allowed: tuple[int, ...] | None) -> None:
    view = labels[sl]
    if allowed is not None:
        inside = inside & np.isin(view, allowed)
    view[inside] = value


def paint_ellipsoid(labels: np.ndarray, grid: Grid, c, r, value: int,
                    allowed: tuple[int, ...] | None = None) -> None:
    c, r = np.asarray(c, float), np.asarray(r, float)
    blk = _block(grid, c - r, c + r)
    if blk is None:
        return
    sl, X, Y, Z = blk
    inside = ((X - c[0]) / r[0]) ** 2 + ((Y - c[1]) / r[1]) ** 2 + ((Z - c[2]) / r[2]) ** 2 < 1
    _paint(labels, sl, inside, value, allowed)


def paint_cylinder(labels: np.ndarray, grid: Grid, cx: float, cy: float, rx: float, ry: float,
                   z0: float, z1: float, value: int, allowed: tuple[int, ...] | None = None) -> None:
    lo = np.array([cx - rx, cy - ry, min(z0, z1)])
    hi = np.array([cx + rx, cy + ry, max(z0, z1)])
    blk = _block(grid, lo, hi)
    if blk is None:
        return
    sl, X, Y, Z = blk
    inside = (((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2 < 1) & np.ones_like(Z, bool)
    _paint(labels, sl, inside, value, allowed)


def paint_segment(labels: np.ndarray, grid: Grid, p0, p1, radius: float, value: int,
                  allowed: tuple[int, ...] | None = None) -> None:
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    blk = _block(grid, np.minimum(p0, p1) - radius, np.maximum(p0, p1) + radius)
    if blk is None:
        return
    sl, X, Y, Z = blk
    d = p1 - p0
    t = ((X - p0[0]) * d[0] + (Y - p0[1]) * d[1] + (Z - p0[2]) * d[2]) / float(d @ d)
    t = np.clip(t, 0, 1)
    dist2 = (X - p0[0] - t * d[0]) ** 2 + (Y - p0[1] - t * d[1]) ** 2 + (Z - p0[2] - t * d[2]) ** 2
    _paint(labels, sl, dist2 < radius**2, value, allowed)


def label_volume(body: Body, grid: Grid) -> np.ndarray:
    """Tissue labels (z, y, x) of ``body`` sampled on ``grid``."""
    lab = np.zeros(grid.shape, np.uint8)
    s = body.scale
    zt, zb = grid.zs.max() + 50, grid.zs.min() - 50
    F, M = int(L.FAT), int(L.MUSCLE)
    ax, ay = body.body_ax, body.body_ay
    paint_cylinder(lab, grid, 0, 0, ax, ay, zt, zb, F)
    wall_x, wall_y = ax - body.fat_mm, ay - body.fat_mm
    paint_cylinder(lab, grid, 0, 0, wall_x, wall_y, zt, zb, M)
    cav_x, cav_y = wall_x - 12, wall_y - 12
    paint_cylinder(lab, grid, 0, 4, cav_x, cav_y - 4, zt, zb, F)
    # lungs (bases, behind the dome), then the diaphragm-covered organs paint over them
    for side in (-1, 1):
        paint_ellipsoid(lab, grid, (side * 70 * s, 30 * s, 150), (62 * s, 60 * s, 75), int(L.LUNG), (F,))
    # spine and paraspinal muscles
    for side in (-1, 1):
        paint_cylinder(lab, grid, side * 34 * s, 88 * s, 24 * s, 20 * s, zt, zb, M)
        paint_ellipsoid(lab, grid, (side * 42 * s, 48 * s, -80), (16 * s, 16 * s, 70), M, (F,))  # psoas
    vx, vy = 0.0, 58 * s
    paint_cylinder(lab, grid, vx, vy, 20 * s, 17 * s, zt, zb, int(L.BONE_CORTEX))
    paint_cylinder(lab, grid, vx, vy, 17 * s, 14 * s, zt, zb, int(L.BONE_MARROW))
    for zc in np.arange(120, -140, -32.0):  # intervertebral discs
        paint_cylinder(lab, grid, vx, vy, 19 * s, 16 * s, zc + 3, zc - 3, M)
    paint_cylinder(lab, grid, vx, vy + 32 * s, 6 * s, 14 * s, zt, zb, int(L.BONE_CORTEX))
    # ribs: small bony ovals along the wall at the upper levels
    for ang in np.deg2rad(np.arange(-150, -20, 18.0)).tolist() + np.deg2rad(np.arange(30, 160, 18.0)).tolist():
        cx, cy = (wall_x - 4) * np.cos(ang), (wall_y - 4) * np.sin(-ang) * -1
        for zc in np.arange(110, -10, -28.0):
            paint_ellipsoid(lab, grid, (cx, cy, zc - 12 * np.cos(ang)), (6, 6, 7), int(L.BONE_CORTEX), (M, F))
    # kidneys
    for side, kz in ((-1, body.kidney_z[0]), (1, body.kidney_z[1])):
        c = (side * 72 * s, 55 * s, kz)
        paint_ellipsoid(lab, grid, c, (26 * s, 30 * s, 55), int(L.KIDNEY_CORTEX), (F,))
        paint_ellipsoid(lab, grid, c, (18 * s, 21 * s, 44), int(L.KIDNEY_MEDULLA))
        paint_ellipsoid(lab, grid, (c[0] - side * 10 * s, c[1] - 4, c[2]), (8 * s, 10 * s, 22), F)
    # spleen, stomach, pancreas, bowel
    paint_ellipsoid(lab, grid, (88 * s, 48 * s, 42), (30 * s, 45 * s, 50), int(L.SPLEEN), (F, int(L.LUNG)))
    paint_ellipsoid(lab, grid, (55 * s, -25 * s, 40), (34 * s, 34 * s, 42), int(L.BOWEL), (F,))
    paint_ellipsoid(lab, grid, (55 * s, -40 * s, 48), (22 * s, 14 * s, 26), int(L.GAS), (int(L.BOWEL),))
    paint_segment(lab, grid, (-18 * s, 10 * s, -8), (75 * s, 30 * s, 2), 12 * s, int(L.PANCREAS), (F,))
    for bx, by, bz in ((-40, -55, -70), (30, -60, -80), (60, -10, -60), (-10, -70, -40), (-70, -10, -85)):
        paint_ellipsoid(lab, grid, (bx * s, by * s, bz), (22 * s, 18 * s, 25), int(L.BOWEL), (F,))
        paint_ellipsoid(lab, grid, (bx * s, (by - 9) * s, bz), (9 * s, 6 * s, 10), int(L.GAS), (int(L.BOWEL),))
    # liver (right and left lobes), gallbladder
    LIV = int(L.LIVER)
    paint_ellipsoid(lab, grid, body.liver_c, body.liver_r, LIV, (F, int(L.LUNG)))
    paint_ellipsoid(lab, grid, body.left_lobe_c, body.left_lobe_r, LIV, (F, int(L.LUNG), int(L.BOWEL)))
    paint_ellipsoid(lab, grid, (-42 * s, -48 * s, -8), (14 * s, 16 * s, 32), int(L.GALLBLADDER), (LIV, F))
    # vessels
    paint_cylinder(lab, grid, 16 * s, 34 * s, 12 * s, 12 * s, zt, zb, int(L.AORTA))
    paint_cylinder(lab, grid, -24 * s, 28 * s, 13 * s, 10 * s, zt, zb, int(L.IVC))
    vessels_ok = (LIV, F, int(L.PANCREAS))
    top = (-24 * s, 28 * s, 78.0)
    for end in ((-95 * s, -5 * s, 58.0), (-45 * s, -45 * s, 68.0), (10 * s, -35 * s, 72.0)):
        paint_segment(lab, grid, top, end, 4.5 * s, int(L.HEPATIC_VEIN), (LIV,))
    h = body.hilum
    paint_segment(lab, grid, (2 * s, 14 * s, -10), h, 7 * s, int(L.PORTAL), vessels_ok)
    paint_segment(lab, grid, h, (-88 * s, 8 * s, h[2] + 8), 5 * s, int(L.PORTAL), (LIV,))
    paint_segment(lab, grid, h, (8 * s, -25 * s, h[2] + 22), 4 * s, int(L.PORTAL), (LIV,))
    paint_segment(lab, grid, (-60 * s, 6 * s, h[2] + 4), (-75 * s, -30 * s, h[2] - 25), 3.5 * s, int(L.PORTAL), (LIV,))
    return lab


def smooth_inplane(vol: np.ndarray) -> np.ndarray:
    """[1 2 1]/4 blur along rows and columns: a little partial-volume softness."""
    out = vol * 0.5
    out[:, 1:, :] += vol[:, :-1, :] * 0.25
    out[:, :-1, :] += vol[:, 1:, :] * 0.25
    out[:, 0, :] += vol[:, 0, :] * 0.25
    out[:, -1, :] += vol[:, -1, :] * 0.25
    res = out * 0.5
    res[:, :, 1:] += out[:, :, :-1] * 0.25
    res[:, :, :-1] += out[:, :, 1:] * 0.25
    res[:, :, 0] += out[:, :, 0] * 0.25
    res[:, :, -1] += out[:, :, -1] * 0.25
    return res
