"""A liver CT protocol as hospitals run it, from scout to dose report.

Bolus tracking fixes the arterial timing (scan when the aorta passes 120 HU, then a
short diagnostic delay), so the headers carry real timing: ContrastBolusStartTime and
per-slice AcquisitionTime put arterial ~35-40 s, portal ~70-80 s and delayed ~180 s
after injection. Role rules (written into the manifest):
- the 5 mm ORIGINAL axial series of each phase carries the phase role;
- thin (1-1.25 mm) recons, thick averaged axials, coronal reformats and MIPs are
  "other", with ``duplicates[uid] = <uid of the 5 mm series of the same phase>``;
- an early arterial series (with a late one present) is "other" and is named in
  ``early_arterial``; scout, monitoring and dose screen save are "other".
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
from pydicom.uid import CTImageStorage, SecondaryCaptureImageStorage

from mvi_node.synth.anatomy import L, N_LABELS, Body, Grid, axial_grid, draw_body, label_volume
from mvi_node.synth.clinical import draw_clinical
from mvi_node.synth.dicomio import SeriesPlan, derive_uid, exam_start, to_stored, tm
from mvi_node.synth.lesions import Lesion, LesionFields, draw_lesions, lesion_fields
from mvi_node.synth.render import Contrast, render, truth_labels
from mvi_node.synth.spec import ExamSpec, exam_rng
from mvi_node.synth.vendors import VENDOR_PROFILES, opaque_name

CT_PHASES: tuple[str, ...] = ("native", "early_arterial", "arterial", "portal", "delayed")
ROLE = {"native": "ct_non_contrast", "arterial": "ct_arterial", "portal": "ct_portal_venous",
        "delayed": "ct_delayed", "early_arterial": "other"}

# HU per label and phase: native, early arterial, late arterial, portal venous, delayed.
_HU: dict[L, tuple[float, ...]] = {
    L.AIR: (-1000,) * 5, L.FAT: (-100,) * 5, L.MUSCLE: (50, 55, 60, 70, 65),
    L.LIVER: (55, 62, 78, 110, 90), L.AORTA: (40, 260, 330, 180, 130), L.IVC: (40, 45, 85, 150, 120),
    L.PORTAL: (40, 70, 140, 190, 130), L.HEPATIC_VEIN: (40, 42, 55, 160, 120),
    L.KIDNEY_CORTEX: (35, 170, 210, 180, 150), L.KIDNEY_MEDULLA: (35, 55, 90, 170, 170),
    L.SPLEEN: (45, 95, 125, 120, 100), L.BONE_CORTEX: (1000,) * 5, L.BONE_MARROW: (380, 380, 385, 390, 388),
    L.GALLBLADDER: (10,) * 5, L.PANCREAS: (45, 90, 120, 100, 80), L.BOWEL: (35, 45, 60, 85, 75),
    L.GAS: (-980,) * 5, L.LUNG: (-850,) * 5,
}
_TUMOR = (45, 88, 118, 85, 70)
_NECROSIS = (25, 25, 26, 28, 30)
_CAPSULE = (50, 58, 68, 108, 118)
_PERI = (0, 25, 40, 4, 0)
_ARTERIES = (0, 160, 230, 20, 0)
_HALO = (0, 0, -6, -22, -20)
TRIGGER_HU = 120.0


def ct_contrast(phase: str, enh: float = 1.0) -> Contrast:
    """HU table of ``phase``; ``enh`` scales enhancement (cardiac output, dose)."""
    i = CT_PHASES.index(phase)
    mix = lambda t: t[0] + (t[i] - t[0]) * enh  # noqa: E731
    lut = np.array([mix(_HU[L(k)]) for k in range(N_LABELS)], np.float32)
    return Contrast(lut, mix(_TUMOR), _NECROSIS[i], mix(_CAPSULE), _PERI[i] * enh, _ARTERIES[i] * enh,
                    _HALO[i], 0.0, texture=12.0 if i else 4.0)


def aorta_hu(t: float, enh: float = 1.0) -> float:
    """Aortic HU ``t`` s after bolus start (rises past 120 HU near 18 s)."""
    return 40 + 290 * enh * float(np.clip((t - 10) / 20, 0, 1)) ** 1.5


@dataclass
class CTSim:
    """A simulated CT exam in memory (HU volumes on the 5 mm grid)."""

    spec: ExamSpec
    body: Body
    lesions: list[Lesion]
    clinical: dict
    grid: Grid
    labels: np.ndarray
    fields: list[LesionFields | None]
    truth: np.ndarray
    enh: float
    volumes: dict[str, np.ndarray] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)  # seconds after bolus start
    variation: object = None  # mvi_node.synth.realism.Variation of a realism="varied" exam


def noise_sd(spec: ExamSpec, thickness: float) -> float:
    base = 10.0 if spec.noise is None else float(spec.noise)
    return base * float(np.sqrt(5.0 / thickness))


def simulate_ct(spec: ExamSpec, phases: tuple[str, ...] | None = None) -> CTSim:
    """Anatomy, lesions and HU volumes of ``phases`` (default: those the exam has)."""
    body = draw_body(exam_rng(spec, "anatomy"))
    clinical = draw_clinical(spec)
    lesions = draw_lesions(exam_rng(spec, "lesions"), body, spec.mvi, spec.grade, clinical["tumor_count"],
                           clinical["main_diameter_mm"], spec.sign_strength)
    varied = spec.realism == "varied"
    if varied:
        from mvi_node.synth import realism

        vrng = exam_rng(spec, "realism")
        lesions = realism.vary_lesions(vrng, lesions)
    clinical["mtd_mm"] = max(les.diameter_mm for les in lesions)
    grid = axial_grid(spec.matrix, 5.0)
    labels = label_volume(body, grid)
    if varied:
        realism.vary_anatomy(vrng, body, grid, labels, lesions)
    fields = [lesion_fields(les, grid) for les in lesions]
    trng = exam_rng(spec, "timing")
    enh = float(trng.uniform(0.85, 1.15))
    timing = {"early_arterial": float(trng.uniform(20, 25)), "arterial": float(trng.uniform(35, 40)),
              "portal": float(trng.uniform(70, 80)), "delayed": float(trng.uniform(175, 185))}
    sim = CTSim(spec, body, lesions, clinical, grid, labels, fields, truth_labels(labels, fields), enh,
                timing=timing)
    if phases is None:
        phases = ("native", "arterial", "portal", "delayed")
        if spec.hard.early_arterial:
            phases = ("native", "early_arterial", "arterial", "portal", "delayed")
    nrng = exam_rng(spec, "noise")
    if varied:
        variation = realism.draw_variation(vrng, len(lesions), spec.vendor)
        warp = realism.Warp(variation, grid)
        for p in phases:
            clean = render(labels, fields, ct_contrast(p, enh), nrng, 0.0, smooth=False)
            sim.volumes[p] = realism.vary_volume(clean, p, variation, labels, sim.truth, warp, nrng,
                                                 noise_sd(spec, 5.0))
        sim.labels, sim.truth = warp(labels, order=0), warp(sim.truth, order=0)
        sim.variation = variation
        return sim
    for p in phases:
        sim.volumes[p] = render(labels, fields, ct_contrast(p, enh), nrng, noise_sd(spec, 5.0))
    return sim


def ct_plans(sim: CTSim) -> tuple[list[SeriesPlan], list[dt.datetime]]:
    """Every series of the exam, in acquisition order, plus the study start times."""
    spec, v, g = sim.spec, VENDOR_PROFILES[sim.spec.vendor], sim.grid
    hard, lang = spec.hard, spec.hard.language
    start = exam_start(spec)
    tb = start + dt.timedelta(seconds=150)
    at = lambda s: tb + dt.timedelta(seconds=s)  # noqa: E731
    style = spec.index + spec.seed
    signed, bits, icpt = v.ct_signed, v.ct_bits_stored, v.ct_intercept
    pixel = {"BitsAllocated": 16, "BitsStored": bits, "HighBit": bits - 1, "PixelRepresentation": int(signed)}
    kernel = {"ge": "STANDARD", "siemens": "Br40", "philips": "B", "canon": "FC08"}[v.key]
    srng = exam_rng(spec, "split")
    n_studies = (3 if srng.random() < 0.5 else 2) if hard.split_studies else 1
    study_of = {"portal": min(1, n_studies - 1), "delayed": n_studies - 1}
    study_times = [start, at(sim.timing["portal"] - 5), at(sim.timing["delayed"] - 5)][:n_studies]
    plans: list[SeriesPlan] = []
    number = 0
    contrast = {}
    if not hard.missing_agent:
        contrast = {"ContrastBolusAgent": v.ct_agent, "ContrastBolusRoute": "IV", "ContrastBolusVolume": 90,
                    "ContrastBolusStartTime": tm(tb), "ContrastFlowRate": [4.0], "ContrastFlowDuration": [22.5],
                    "ContrastBolusIngredient": "IODINE", "ContrastBolusIngredientConcentration": 350}

    def tags(phase: str | None, kvp: int = 120, ma: int = 220, thickness: float = 5.0) -> dict:
        t = {"KVP": kvp, "XRayTubeCurrent": ma, "ExposureTime": 500, "ConvolutionKernel": kernel,
             "ReconstructionDiameter": 380, "DataCollectionDiameter": 500, "GantryDetectorTilt": 0,
             "TableHeight": 150, "RotationDirection": "CW", "BodyPartExamined": "ABDOMEN",
             "RescaleIntercept": icpt, "RescaleSlope": 1, "RescaleType": "HU", "WindowCenter": 50,
             "WindowWidth": 350, "AcquisitionNumber": 1, "ProtocolName": "LIVER 3PHASE"}
        if phase is not None and phase != "native":
            t.update(contrast)
        return t

    def add(name: str, role: str, desc: str, images: np.ndarray, positions, orientation, spacing, thick,
            itype, series_time, acq, study=0, extra=None, plane=True, px=None) -> SeriesPlan:
        nonlocal number
        number += 1
        p = SeriesPlan(name=name, role=role, description=desc, number=number,
                       sop_class=CTImageStorage if plane else SecondaryCaptureImageStorage,
                       images=images, positions=positions, orientation=orientation, pixel_spacing=spacing,
                       thickness=thick, image_type=tuple(itype), series_time=series_time, acq_times=acq,
                       study=study, tags=extra or {}, pixel=px or pixel, plane=plane,
                       uid=derive_uid(spec.key(), "series", name))
        plans.append(p)
        return p

    def stored(hu: np.ndarray) -> np.ndarray:
        return to_stored(hu, 1.0, icpt, signed, bits)

    axial = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    coronal = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
    itype = v.ct_image_type

    def name_of(key: str, t: float, kind: str = "axial", k: int = 0) -> str:
        if hard.opaque_descriptions:
            return opaque_name("ct", style, number + 1, k + 1, t)
        return v.ct_name(key, lang, t, kind)

    # scout: a coronal projection radiograph
    native = sim.volumes.get("native")
    proj_src = native if native is not None else next(iter(sim.volumes.values()))
    att = np.clip(proj_src + 1000, 0, None).mean(axis=1)  # (z, x)
    rep = max(1, int(round(5.0 / g.pixel_spacing[1])))
    scout = np.repeat(att, rep, axis=0)
    scout = (scout / max(float(scout.max()), 1.0) * 3000)[None]
    add("scout", "other", v.ct_scout, to_stored(scout, 1.0, 0.0, False, 12),
        [[g.xs[0], 0.0, g.zs[0] + 2.5]], coronal, (5.0 / rep, g.pixel_spacing[1]), 0.6,
        ("ORIGINAL", "PRIMARY", "LOCALIZER"), start + dt.timedelta(seconds=20), [start + dt.timedelta(seconds=20)],
        extra={**tags(None, kvp=120, ma=35), "RescaleIntercept": 0, "RescaleType": None},
        px={"BitsAllocated": 16, "BitsStored": 12, "HighBit": 11, "PixelRepresentation": 0})

    # native 5 mm
    def acq_times(t0: dt.datetime, n: int) -> list[dt.datetime]:
        return [t0 + dt.timedelta(microseconds=50000 * i) for i in range(n)]

    positions = [g.position(k) for k in range(len(g.zs))]
    if native is not None:
        t0 = start + dt.timedelta(seconds=80)
        add("native", ROLE["native"], name_of("native", 5.0), stored(native), positions, axial, g.pixel_spacing,
            5.0, itype, t0, acq_times(t0, len(positions)), extra=tags("native"))

    # bolus tracking: one low-dose level, repeated every 2 s until the aorta passes 120 HU
    kz = int(np.argmin(np.abs(g.zs - sim.body.monitor_z)))
    lab = sim.labels[kz:kz + 1]
    mrng = exam_rng(spec, "monitor")
    frames, times = [], []
    for k in range(15):
        t = 8 + 2 * k
        c = ct_contrast("native", sim.enh)
        lut = c.lut.copy()
        lut[int(L.AORTA)] = aorta_hu(t, sim.enh)
        img = lut[lab] + mrng.standard_normal(lab.shape, dtype=np.float32) * 25
        frames.append(img[0])
        times.append(at(t))
        if aorta_hu(t, sim.enh) >= TRIGGER_HU:
            break
    mon_itype = itype[:3] + (("CT_SOM5 MONI",) if v.key == "siemens" else ())
    add("monitoring", "other", v.ct_monitor, stored(np.stack(frames)), [g.position(kz)] * len(frames), axial,
        g.pixel_spacing, 10.0, mon_itype, times[0], times,
        extra={**tags("monitoring", kvp=100, ma=30), "ProtocolName": "LIVER 3PHASE"},
        )
    plans[-1].per_instance = [{"AcquisitionNumber": i + 2} for i in range(len(frames))]

    phase_plans: dict[str, SeriesPlan] = {}
    for k, phase in enumerate(("early_arterial", "arterial", "portal", "delayed")):
        if phase not in sim.volumes:
            continue
        t0 = at(sim.timing[phase])
        phase_plans[phase] = add(phase, ROLE[phase], name_of(phase, 5.0, k=k + 1), stored(sim.volumes[phase]),
                                 positions, axial, g.pixel_spacing, 5.0, itype, t0, acq_times(t0, len(positions)),
                                 study=study_of.get(phase, 0), extra={**tags(phase), "AcquisitionNumber": k + 2})
    if "early_arterial" in phase_plans and "arterial" in phase_plans:
        phase_plans["early_arterial"].note["early_arterial"] = True

    derived = list(itype)
    derived[:2] = ["DERIVED", "SECONDARY"]
    later = lambda p, s: p.series_time + dt.timedelta(seconds=s)  # noqa: E731
    if spec.thin:
        tt = 1.25 if v.key == "ge" else 1.0
        tg = axial_grid(spec.matrix, tt)
        tlab = label_volume(sim.body, tg)
        tfields = [lesion_fields(les, tg) for les in sim.lesions]
        trng = exam_rng(spec, "thin-noise")
        for k, phase in enumerate(("arterial", "portal", "delayed")):
            if phase not in phase_plans:
                continue
            vol = render(tlab, tfields, ct_contrast(phase, sim.enh), trng, noise_sd(spec, tt))
            src = phase_plans[phase]
            tpos = [tg.position(i) for i in range(len(tg.zs))]
            p = add(f"thin-{phase}", "other", name_of(phase, tt, k=10 + k), stored(vol), tpos, axial,
                    tg.pixel_spacing, tt, itype, later(src, 30), [src.acq_times[0]] * len(tpos),
                    study=src.study, extra={**tags(phase), "AcquisitionNumber": src.tags["AcquisitionNumber"]})
            p.note["duplicates"] = src.uid
    if hard.reformats:
        if "portal" in phase_plans:
            src = phase_plans["portal"]
            vol = sim.volumes["portal"]
            ys = [j for j in range(0, len(g.ys), max(1, int(round(5.0 / g.pixel_spacing[0]))))
                  if -90 <= g.ys[j] <= 70]
            imgs = np.stack([vol[:, j, :] for j in ys])
            pos = [[g.xs[0], g.ys[j], g.zs[0]] for j in ys]
            p = add("coronal-portal", "other", name_of("portal", 5.0, "coronal", k=20), stored(imgs), pos, coronal,
                    (5.0, g.pixel_spacing[1]), 5.0,
                    ("DERIVED", "SECONDARY", "REFORMATTED" if v.key == "ge" else "MPR"), later(src, 60),
                    [src.acq_times[0]] * len(ys), study=src.study, extra=tags("portal"))
            p.note["duplicates"] = src.uid
            thick = 0.5 * (vol[0:-1:2] + vol[1::2])
            tpos = [[g.xs[0], g.ys[0], round(float(g.zs[2 * i] - 2.5), 4)] for i in range(len(thick))]
            p = add("thick-portal", "other", name_of("portal", 10.0, "thick", k=21), stored(thick), tpos, axial,
                    g.pixel_spacing, 10.0, derived[:3], later(src, 90), [src.acq_times[0]] * len(tpos),
                    study=src.study, extra=tags("portal"))
            p.note["duplicates"] = src.uid
        if "arterial" in phase_plans:
            src = phase_plans["arterial"]
            vol = sim.volumes["arterial"]
            mip = np.maximum(vol[:-1], vol[1:])
            mpos = [[g.xs[0], g.ys[0], round(float(g.zs[i] - 2.5), 4)] for i in range(len(mip))]
            p = add("mip-arterial", "other", name_of("arterial", 10.0, "mip", k=22), stored(mip), mpos, axial,
                    g.pixel_spacing, 10.0, ("DERIVED", "SECONDARY", "MIP"), later(src, 120),
                    [src.acq_times[0]] * len(mpos), study=src.study, extra=tags("arterial"))
            p.note["duplicates"] = src.uid
    # dose report: a secondary-capture screen save
    last = max(p.series_time for p in plans)
    img = np.zeros((1, 256, 256), np.float32)
    img[0, 20:40, 20:236] = 3000
    img[0, 60:200:20, 20:200] = 2000
    dose = add("dose", "other", v.ct_dose, to_stored(img, 1.0, 0.0, False, 12), [[0, 0, 0]], axial, (1, 1), 1,
               ("DERIVED", "SECONDARY", "OTHER"), last + dt.timedelta(seconds=60), [last + dt.timedelta(seconds=60)],
               study=n_studies - 1, plane=False,
               extra={"ConversionType": "WSD", "PatientOrientation": "", "ImageComments": "CTDIvol 11.8 mGy; DLP 1420 mGy*cm",
                      "ProtocolName": "LIVER 3PHASE", "BodyPartExamined": "ABDOMEN"},
               px={"BitsAllocated": 16, "BitsStored": 12, "HighBit": 11, "PixelRepresentation": 0})
    dose.number = v.dose_series_number
    return plans, study_times
