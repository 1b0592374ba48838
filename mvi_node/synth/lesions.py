"""HCC lesions with the imaging signs that correlate with microvascular invasion.

The signs are what the literature reports radiologists see in MVI+ tumours: a
non-smooth margin, peritumoral arterial enhancement, internal arteries, an absent
capsule or a hypodense halo, and peritumoral hypointensity in the hepatobiliary phase.
Each is a separate field with its own strength, present more often and more strongly
in MVI+ (M2 most), but sometimes missing there and sometimes weakly present in MVI-,
so a model can learn them without the task being trivial.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mvi_node.synth.anatomy import FOV_MM, Body, Grid, L, axial_grid, label_volume

SIGN_NAMES: tuple[str, ...] = (
    "non_smooth_margin",
    "peritumoral_enhancement",
    "internal_arteries",
    "capsule_absent",
    "hypodense_halo",
    "hbp_peritumoral_hypointensity",
)


@dataclass(frozen=True)
class Lesion:
    center: tuple[float, float, float]  # mm, LPS
    radii: tuple[float, float, float]  # mm
    angle: float  # rotation about z (rad)
    lobes: tuple[tuple[int, int, float, float], ...]  # (m, n, phase1, phase2)
    signs: dict[str, float]  # 0 = absent, else strength 0..1
    capsule: float  # enhancing capsule strength (0 = none)
    necrosis: float  # radius fraction of the necrotic core (0 = none)
    wedge_dir: tuple[float, float, float]
    arteries: tuple[tuple[float, float, float], ...]  # unit directions of internal arteries
    texture_seed: int

    @property
    def diameter_mm(self) -> float:
        return round(2 * max(self.radii), 1)


def draw_lesions(rng: np.random.Generator, body: Body, mvi: bool, grade: str, count: int,
                 main_diameter: float, sign_strength: float) -> list[Lesion]:
    """``count`` lesions; the first has ``main_diameter``, satellites are smaller."""
    lesions: list[Lesion] = []
    liver = _liver_points(body)
    for k in range(count):
        diam = main_diameter if k == 0 else float(rng.uniform(10, min(25, main_diameter)))
        lesions.append(_one(rng, liver, mvi, grade, diam, sign_strength, lesions))
    return lesions


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    m = mask.copy()
    for _ in range(steps):
        e = m.copy()
        e[1:] &= m[:-1]
        e[:-1] &= m[1:]
        e[:, 1:] &= m[:, :-1]
        e[:, :-1] &= m[:, 1:]
        e[:, :, 1:] &= m[:, :, :-1]
        e[:, :, :-1] &= m[:, :, 1:]
        e[0] = e[-1] = False
        m = e
    return m


def _liver_points(body: Body) -> tuple[Grid, np.ndarray]:
    """Coarse liver mask (4 mm voxels) to place lesions inside the real organ."""
    grid = axial_grid(96, 4.0, fov=FOV_MM)
    return grid, label_volume(body, grid) == int(L.LIVER)


def _place(rng: np.random.Generator, liver: tuple[Grid, np.ndarray], radius: float,
           placed: list[Lesion]) -> tuple[float, float, float]:
    grid, mask = liver
    depth = int(np.clip(radius * 0.6, 4, 24) // 4)
    pts = np.argwhere(mask)
    for d in range(depth, -1, -1):
        cand = np.argwhere(_erode(mask, d)) if d else pts
        if len(cand) == 0:
            continue
        for _ in range(40):
            z, y, x = cand[int(rng.integers(len(cand)))]
            p = np.array([grid.xs[x], grid.ys[y], grid.zs[z]]) + rng.uniform(-2, 2, 3)
            if all(np.linalg.norm(p - np.array(q.center)) > radius + max(q.radii) + 3 for q in placed):
                return tuple(float(v) for v in p)
    z, y, x = pts[int(rng.integers(len(pts)))]
    return (float(grid.xs[x]), float(grid.ys[y]), float(grid.zs[z]))


def _one(rng: np.random.Generator, liver: tuple[Grid, np.ndarray], mvi: bool, grade: str, diam: float,
         strength: float, placed: list[Lesion]) -> Lesion:
    r = diam / 2
    radii = (r, r * float(rng.uniform(0.8, 1.0)), r * float(rng.uniform(0.8, 1.0)))
    center = _place(rng, liver, r, placed)
    boost = 0.15 if grade == "M2" else 0.0
    signs: dict[str, float] = {}
    for name in SIGN_NAMES:
        if mvi:
            p = 0.25 + 0.5 * strength + boost
            amp = float(rng.uniform(0.45, 1.0)) * (0.5 + 0.5 * strength)
        else:
            p = 0.08 + 0.25 * (1 - strength)
            amp = float(rng.uniform(0.1, 0.4))
        present = rng.random() < p
        signs[name] = round(amp, 3) if present else 0.0
    capsule = 0.0 if signs["capsule_absent"] > 0 else float(rng.uniform(0.6, 1.0))
    n_lobes = int(rng.integers(2, 5))
    lobes = tuple((int(rng.integers(3, 8)), int(rng.integers(2, 5)),
                   float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0, 2 * np.pi))) for _ in range(n_lobes))
    w = rng.normal(size=3)
    arteries = tuple(tuple(float(x) for x in v / np.linalg.norm(v)) for v in rng.normal(size=(3, 3)))
    return Lesion(
        center=center,
        radii=radii,
        angle=float(rng.uniform(0, np.pi)),
        lobes=lobes,
        signs=signs,
        capsule=round(capsule, 3),
        necrosis=float(rng.uniform(0.25, 0.45)) if diam > 50 and rng.random() < 0.6 else 0.0,
        wedge_dir=tuple(float(x) for x in w / np.linalg.norm(w)),
        arteries=arteries,
        texture_seed=int(rng.integers(2**31)),
    )


@dataclass
class LesionFields:
    """Weights (0..1, or signed texture) on a crop ``sl`` of a grid."""

    sl: tuple[slice, slice, slice]
    tumor: np.ndarray  # bool
    necrosis: np.ndarray
    capsule: np.ndarray
    halo: np.ndarray
    peri_enh: np.ndarray
    arteries: np.ndarray
    hbp_rim: np.ndarray
    texture: np.ndarray


def lesion_fields(les: Lesion, grid: Grid) -> LesionFields | None:
    """Evaluate the lesion and its signs on ``grid`` (None if outside it)."""
    margin = 14.0
    rmax = max(les.radii) * 1.35 + margin
    c = np.array(les.center)

    def rng_axis(coords: np.ndarray, lo: float, hi: float) -> slice | None:
        idx = np.nonzero((coords >= lo) & (coords <= hi))[0]
        return None if idx.size == 0 else slice(int(idx.min()), int(idx.max()) + 1)

    sz = rng_axis(grid.zs, c[2] - rmax, c[2] + rmax)
    sy = rng_axis(grid.ys, c[1] - rmax, c[1] + rmax)
    sx = rng_axis(grid.xs, c[0] - rmax, c[0] + rmax)
    if sz is None or sy is None or sx is None:
        return None
    dz = (grid.zs[sz] - c[2])[:, None, None]
    dy = (grid.ys[sy] - c[1])[None, :, None]
    dx = (grid.xs[sx] - c[0])[None, None, :]
    ca, sa = np.cos(les.angle), np.sin(les.angle)
    u = (dx * ca + dy * sa) / les.radii[0]
    v = (-dx * sa + dy * ca) / les.radii[1]
    w = np.broadcast_to(dz / les.radii[2], np.broadcast_shapes(u.shape, dz.shape))
    u = np.broadcast_to(u, w.shape)
    v = np.broadcast_to(v, w.shape)
    rho0 = np.sqrt(u * u + v * v + w * w) + 1e-6
    theta = np.arctan2(v, u)
    phi = np.arccos(np.clip(w / rho0, -1, 1))
    amp = 0.04 + 0.22 * les.signs["non_smooth_margin"]
    bump = np.zeros_like(rho0)
    for m, n, p1, p2 in les.lobes:
        bump += np.sin(m * theta + p1) * np.sin(n * phi + p2)
    rho = rho0 / (1 + amp * bump / np.sqrt(max(1, len(les.lobes))) * 1.3)
    tumor = rho < 1.0
    r_mean = float(np.mean(les.radii))
    shell = lambda t_mm: (rho >= 1.0) & (rho < 1.0 + t_mm / r_mean)  # noqa: E731
    capsule = shell(1.8).astype(np.float32) * les.capsule
    halo_s = les.signs["hypodense_halo"]
    halo = ((rho >= 1.0 + (1.8 / r_mean if les.capsule else 0)) & (rho < 1.0 + 4.5 / r_mean)).astype(np.float32) * halo_s
    # peritumoral arterial enhancement: a wedge (cone) fading over ~10 mm
    dist = np.clip((rho - 1.0) * r_mean, 0, None)
    pe_s = les.signs["peritumoral_enhancement"]
    wd = np.array(les.wedge_dir)
    cosang = (dx * wd[0] + dy * wd[1] + dz * wd[2]) / (np.sqrt(dx**2 + dy**2 + dz**2) + 1e-6)
    cone = np.clip((cosang - 0.35) / 0.4, 0, 1)
    peri = (np.exp(-dist / 5.0) * (rho >= 1.0) * (dist < 12) * cone).astype(np.float32) * pe_s
    hbp_s = les.signs["hbp_peritumoral_hypointensity"]
    hbp_rim = ((rho >= 1.0) & (dist < 7.0)).astype(np.float32) * hbp_s * np.exp(-dist / 6.0).astype(np.float32)
    # internal arteries: thin tubes through the tumour along random directions
    art_s = les.signs["internal_arteries"]
    arteries = np.zeros(rho.shape, np.float32)
    if art_s > 0:
        rr = 1.3 if grid.pixel_spacing[0] < 1.2 else 1.6
        for k, d in enumerate(les.arteries):
            off = np.array(les.arteries[(k + 1) % 3]) * r_mean * 0.25 * (k - 1)
            px, py, pz = dx - off[0], dy - off[1], dz - off[2]
            t = px * d[0] + py * d[1] + pz * d[2]
            d2 = px**2 + py**2 + pz**2 - t**2
            arteries = np.maximum(arteries, (d2 < rr**2).astype(np.float32))
        arteries *= tumor * art_s
    necrosis = (tumor & (rho0 < les.necrosis)).astype(np.float32) if les.necrosis else np.zeros(rho.shape, np.float32)
    trng = np.random.default_rng(les.texture_seed)
    k1, k2, k3 = trng.uniform(0.08, 0.2, 3)
    p = trng.uniform(0, 2 * np.pi, 3)
    texture = (np.sin(k1 * dx + p[0]) * np.sin(k2 * dy + p[1]) * np.sin(k3 * dz + p[2])).astype(np.float32)
    return LesionFields((sz, sy, sx), tumor, necrosis, capsule, halo, peri, arteries, hbp_rim, texture)


def lesion_summary(les: Lesion) -> dict:
    """Manifest entry for one lesion."""
    return {
        "center_mm": [round(v, 2) for v in les.center],
        "diameter_mm": les.diameter_mm,
        "radii_mm": [round(v, 2) for v in les.radii],
        "mvi_signs": {**les.signs, "capsule": les.capsule},
        "necrosis": les.necrosis > 0,
    }
