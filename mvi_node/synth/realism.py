"""Wider CT realism, asked for with ``realism="varied"`` (the default ``"basic"`` leaves
every exam of a seed byte-identical to what the generator always wrote).

What a varied exam adds, each drawn from the exam's own ``realism`` RNG stream:

- **organ shape**: the liver gets 1-3 bulges (extra lobes, Riedel-like tongues) and up
  to 2 surface notches; the whole abdomen is elastically deformed (a smooth random
  displacement field of a few mm on a coarse lattice, plus an anisotropic scaling of
  +-10 %), so no two livers are the same ellipsoids;
- **vessels**: 6-14 extra portal and hepatic-vein branches of 1.5-3.5 mm inside the liver;
- **liver parenchyma**: a steatosis/cirrhosis HU shift of the whole liver (-30..+10 HU)
  and a low-frequency parenchymal texture;
- **lesions**: elongated shapes (each radius 0.65-1.0 of the drawn one), and an
  enhancement pattern per lesion: hyper-enhancing (the default), iso-, hypo-enhancing or
  rim-enhancing in the arterial phase, with or without wash-out, plus heterogeneity;
- **acquisition**: a slice-profile blur along z (partial volume), noise 6-22 HU at 5 mm
  that is spatially correlated with a vendor-dependent kernel look (GE soft ... Siemens
  sharp), a calibration offset of +-6 HU.

CT only; the labels and truth masks are deformed with the images, so truth stays exact.
Thin reconstructions and reformats of a varied exam are rendered from the undeformed
anatomy (they are header fixtures, not segmentation data).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mvi_node.synth.anatomy import L, Body, Grid, paint_ellipsoid, paint_segment, smooth_inplane
from mvi_node.synth.lesions import Lesion

REALISM = ("basic", "varied")
#: arterial/portal/delayed tumour HU offsets of each enhancement pattern (before the per-lesion jitter)
PATTERNS: dict[str, tuple[float, float, float]] = {
    "hyper": (0.0, 0.0, 0.0),
    "iso": (-38.0, -5.0, 0.0),
    "hypo": (-62.0, -30.0, -20.0),
    "rim": (-55.0, -20.0, -10.0),
}
PATTERN_P = (0.5, 0.15, 0.2, 0.15)


@dataclass
class Variation:
    """What one varied exam draws, applied to labels, lesions and every phase alike."""

    liver_offset: float
    patterns: list[str]
    lesion_offsets: list[tuple[float, float, float]]
    heterogeneity: list[float]
    noise_sd: float
    noise_sigma: float
    hu_offset: float
    z_blur: float
    texture_seed: int
    warp_seed: int
    warp_mm: float
    scale: tuple[float, float, float]


def vary_lesions(rng: np.random.Generator, lesions: list[Lesion]) -> list[Lesion]:
    """Elongated copies (radii only shrink, so lesions still do not overlap)."""
    out = []
    for les in lesions:
        f = rng.uniform(0.65, 1.0, 3)
        f[int(rng.integers(3))] = 1.0  # keep the drawn diameter on one axis
        out.append(replace(les, radii=tuple(float(r * k) for r, k in zip(les.radii, f)),
                           angle=float(rng.uniform(0, np.pi))))
    return out


#: noise-correlation length (pixels) by vendor: a soft or a sharp reconstruction kernel look
KERNEL_SIGMA = {"ge": (0.6, 1.2), "siemens": (0.0, 0.6), "philips": (0.3, 0.9), "canon": (0.4, 1.0)}


def draw_variation(rng: np.random.Generator, n_lesions: int, vendor: str = "ge") -> Variation:
    patterns = [str(rng.choice(list(PATTERNS), p=PATTERN_P)) for _ in range(n_lesions)]
    offsets = []
    for p in patterns:
        a, pv, d = PATTERNS[p]
        j = float(rng.uniform(-15, 25)) if p == "hyper" else float(rng.uniform(-10, 10))
        offsets.append((a + j, pv + float(rng.uniform(-10, 10)), d + float(rng.uniform(-10, 10))))
    return Variation(
        liver_offset=float(rng.uniform(-30, 10)), patterns=patterns, lesion_offsets=offsets,
        heterogeneity=[float(rng.uniform(0, 18)) for _ in range(n_lesions)],
        noise_sd=float(rng.uniform(6, 22)), noise_sigma=float(rng.uniform(*KERNEL_SIGMA.get(vendor, (0.0, 1.2)))),
        hu_offset=float(rng.uniform(-6, 6)), z_blur=float(rng.uniform(0.0, 0.3)),
        texture_seed=int(rng.integers(2**31)), warp_seed=int(rng.integers(2**31)),
        warp_mm=float(rng.uniform(2, 7)), scale=tuple(float(v) for v in rng.uniform(0.9, 1.1, 3)),
    )


def vary_anatomy(rng: np.random.Generator, body: Body, grid: Grid, labels: np.ndarray,
                 lesions: list[Lesion]) -> None:
    """Liver bulges and notches, extra vessel branches, painted into ``labels``."""
    LIV, F, LUNG = int(L.LIVER), int(L.FAT), int(L.LUNG)
    c, r = np.asarray(body.liver_c, float), np.asarray(body.liver_r, float)

    def surface_point() -> np.ndarray:
        d = rng.normal(size=3)
        d[2] *= 0.6
        return c + r * d / np.linalg.norm(d)

    def far_from_lesions(p: np.ndarray, margin: float) -> bool:
        return all(np.linalg.norm(p - np.asarray(les.center)) > max(les.radii) + margin for les in lesions)

    for _ in range(int(rng.integers(1, 4))):
        p = c + (surface_point() - c) * 0.85
        paint_ellipsoid(labels, grid, p, rng.uniform(18, 40, 3), LIV, (F, LUNG))
    for _ in range(int(rng.integers(0, 3))):
        p = surface_point()
        rad = rng.uniform(10, 22, 3)
        if far_from_lesions(p, float(rad.max()) + 8):
            paint_ellipsoid(labels, grid, p, rad, F, (LIV,))
    s = body.scale
    roots = [np.array(body.hilum, float), np.array((-24 * s, 28 * s, 70.0))]
    for k in range(int(rng.integers(6, 15))):
        start = roots[k % 2] + rng.normal(0, 12, 3)
        d = rng.normal(size=3)
        d[0] -= 0.8  # mostly towards the right lobe
        end = start + d / np.linalg.norm(d) * rng.uniform(20, 55)
        value = int(L.PORTAL) if k % 2 == 0 else int(L.HEPATIC_VEIN)
        paint_segment(labels, grid, start, end, float(rng.uniform(1.5, 3.5)), value, (LIV,))


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], cell: tuple[float, float, float]) -> np.ndarray:
    """Random field (unit sd at the lattice) on a coarse lattice of ``cell`` voxels, trilinear up."""
    from scipy.ndimage import zoom

    coarse = tuple(max(2, int(np.ceil(n / c)) + 1) for n, c in zip(shape, cell))
    lattice = rng.standard_normal(coarse).astype(np.float32)
    up = zoom(lattice, [n / m for n, m in zip(shape, coarse)], order=1, mode="nearest", grid_mode=False)
    return up[:shape[0], :shape[1], :shape[2]]


class Warp:
    """An elastic deformation of one exam's grid: sample positions per voxel."""

    def __init__(self, v: Variation, grid: Grid) -> None:
        rng = np.random.default_rng(v.warp_seed)
        nz, ny, nx = grid.shape
        dy, dx = grid.pixel_spacing
        dz = abs(grid.slice_spacing) or grid.thickness
        cell = (max(2.0, 50.0 / dz), 50.0 / dy, 50.0 / dx)
        zz, yy, xx = np.meshgrid(np.arange(nz, dtype=np.float32), np.arange(ny, dtype=np.float32),
                                 np.arange(nx, dtype=np.float32), indexing="ij")
        cz, cy, cx = (nz - 1) / 2, (ny - 1) / 2, (nx - 1) / 2
        sz, sy, sx = v.scale
        self.coords = np.stack([
            cz + (zz - cz) / sz + _smooth_field(rng, grid.shape, cell) * (v.warp_mm * 0.4 / dz),
            cy + (yy - cy) / sy + _smooth_field(rng, grid.shape, cell) * (v.warp_mm / dy),
            cx + (xx - cx) / sx + _smooth_field(rng, grid.shape, cell) * (v.warp_mm / dx),
        ])

    def __call__(self, vol: np.ndarray, order: int, fill: float = 0.0) -> np.ndarray:
        from scipy.ndimage import map_coordinates

        out = map_coordinates(vol, self.coords, order=order, mode="nearest" if order else "constant", cval=fill)
        return out.astype(vol.dtype, copy=False)


PHASE_INDEX = {"arterial": 0, "early_arterial": 0, "portal": 1, "delayed": 2}


def vary_volume(vol: np.ndarray, phase: str, v: Variation, labels: np.ndarray, truth: np.ndarray,
                warp: Warp, rng: np.random.Generator, base_noise_sd: float) -> np.ndarray:
    """A noiseless, unsmoothed rendered phase -> the varied image (HU, float32)."""
    out = vol.astype(np.float32, copy=True)
    if phase != "native":
        liver = (labels == int(L.LIVER)) & (truth == 0)
        tex = _smooth_field(np.random.default_rng(v.texture_seed), vol.shape, (2.0, 12.0, 12.0)) * 6.0
        out[liver] += v.liver_offset * (0.6 if phase in ("arterial", "early_arterial") else 1.0) + tex[liver]
        i = PHASE_INDEX.get(phase)
        het = _smooth_field(np.random.default_rng(v.texture_seed + 1), vol.shape, (1.5, 4.0, 4.0))
        for k, (offs, h, pattern) in enumerate(zip(v.lesion_offsets, v.heterogeneity, v.patterns), start=1):
            m = truth == k
            if not m.any() or i is None:
                continue
            add = np.full(int(m.sum()), offs[i], np.float32) + het[m] * h
            if pattern == "rim" and i == 0:
                from scipy.ndimage import binary_erosion

                core = binary_erosion(m, iterations=2)
                add = add + np.where(core[m], 0.0, 70.0).astype(np.float32)
            out[m] += add
    else:
        out[labels == int(L.LIVER)] += v.liver_offset
    out = smooth_inplane(out)
    if v.z_blur > 0 and out.shape[0] > 2:
        zb = out.copy()
        zb[1:-1] = (1 - 2 * v.z_blur) * out[1:-1] + v.z_blur * (out[:-2] + out[2:])
        out = zb
    out = warp(out, order=1)
    noise = rng.standard_normal(out.shape, dtype=np.float32)
    if v.noise_sigma > 0.2:
        from scipy.ndimage import gaussian_filter

        noise = gaussian_filter(noise, (0, v.noise_sigma, v.noise_sigma))
        noise /= max(float(noise.std()), 1e-6)
    scale = v.noise_sd * base_noise_sd / 10.0
    return out + noise * np.float32(scale) + np.float32(v.hu_offset)
