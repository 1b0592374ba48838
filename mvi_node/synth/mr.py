"""A liver MRI exam with gadoxetate (Gd-EOB-DTPA) or an extracellular agent.

Gd-EOB adds the ~20 min hepatobiliary phase (liver bright, HCC dark) and turns the
3 min phase into a "transitional" one; with extracellular agents the 3 min phase is the
classic delayed phase and T2/DWI are acquired before contrast. Both 3 min phases carry
the role ``mr_transitional``. A multiphase acquisition written as ONE series (pre,
[early arterial], arterial, portal, transitional) is distinguished by
TemporalPositionIdentifier, TriggerTime and AcquisitionTime; in the manifest its
series role is "other" and ``phases[uid][tpi]`` holds the phase roles.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
from pydicom.uid import MRImageStorage

from mvi_node.synth.anatomy import L, N_LABELS, Body, Grid, axial_grid, draw_body, label_volume
from mvi_node.synth.clinical import draw_clinical
from mvi_node.synth.dicomio import SeriesPlan, derive_uid, exam_start, to_stored, tm
from mvi_node.synth.lesions import Lesion, LesionFields, draw_lesions, lesion_fields
from mvi_node.synth.render import Contrast, render, truth_labels
from mvi_node.synth.spec import ExamSpec, exam_rng
from mvi_node.synth.vendors import DIXON_IMAGE_TYPES, SUBTRACTION_IMAGE_TYPES, VENDOR_PROFILES, opaque_name

T1_PHASES: tuple[str, ...] = ("pre", "early_arterial", "arterial", "portal", "transitional", "hepatobiliary")
ROLE = {"pre": "mr_t1_pre", "early_arterial": "other", "arterial": "mr_arterial", "portal": "mr_portal_venous",
        "transitional": "mr_transitional", "hepatobiliary": "mr_hepatobiliary", "t2": "mr_t2", "dwi": "mr_dwi",
        "adc": "mr_adc"}

# T1 fat-suppressed 3D GRE signal per phase (pre, early art, art, portal, transitional(EOB), HBP);
# ECF transitional values in _ECF_TRANS.
_T1: dict[L, tuple[float, ...]] = {
    L.AIR: (0,) * 6, L.FAT: (100,) * 6, L.MUSCLE: (250, 260, 300, 330, 330, 320),
    L.LIVER: (400, 430, 520, 720, 700, 950), L.AORTA: (120, 1000, 1300, 800, 450, 250),
    L.IVC: (120, 150, 300, 800, 450, 250), L.PORTAL: (120, 300, 800, 900, 500, 260),
    L.HEPATIC_VEIN: (120, 130, 200, 800, 450, 250), L.KIDNEY_CORTEX: (350, 800, 1100, 900, 800, 500),
    L.KIDNEY_MEDULLA: (250, 300, 500, 900, 900, 450), L.SPLEEN: (300, 500, 800, 700, 550, 400),
    L.BONE_CORTEX: (20,) * 6, L.BONE_MARROW: (300, 310, 350, 380, 380, 370),
    L.GALLBLADDER: (150, 150, 150, 150, 150, 900), L.PANCREAS: (500, 600, 800, 650, 550, 500),
    L.BOWEL: (250, 270, 350, 400, 380, 360), L.GAS: (0,) * 6, L.LUNG: (15,) * 6,
}
_ECF_TRANS = {L.LIVER: 650, L.AORTA: 600, L.IVC: 600, L.PORTAL: 650, L.HEPATIC_VEIN: 600}
_TUMOR = (300, 650, 900, 560, 480, 300)
_CAPSULE = (330, 400, 450, 700, 650, 400)
_PERI = (0, 150, 250, 20, 0, 0)
_ARTERIES = (0, 400, 600, 50, 0, 0)
_HALO = (0, 0, 0, -120, -120, -100)
_T2: dict[L, float] = {
    L.AIR: 0, L.FAT: 80, L.MUSCLE: 150, L.LIVER: 200, L.AORTA: 40, L.IVC: 40, L.PORTAL: 40, L.HEPATIC_VEIN: 40,
    L.KIDNEY_CORTEX: 500, L.KIDNEY_MEDULLA: 700, L.SPLEEN: 450, L.BONE_CORTEX: 20, L.BONE_MARROW: 120,
    L.GALLBLADDER: 1500, L.PANCREAS: 300, L.BOWEL: 400, L.GAS: 0, L.LUNG: 20,
}
_ADC: dict[L, float] = {  # 1e-6 mm2/s
    L.AIR: 0, L.FAT: 200, L.MUSCLE: 1400, L.LIVER: 1200, L.AORTA: 2500, L.IVC: 2500, L.PORTAL: 2500,
    L.HEPATIC_VEIN: 2500, L.KIDNEY_CORTEX: 2000, L.KIDNEY_MEDULLA: 2200, L.SPLEEN: 850, L.BONE_CORTEX: 200,
    L.BONE_MARROW: 600, L.GALLBLADDER: 3000, L.PANCREAS: 1300, L.BOWEL: 1500, L.GAS: 0, L.LUNG: 0,
}
_T1_IN: dict[L, float] = {
    L.AIR: 0, L.FAT: 900, L.MUSCLE: 280, L.LIVER: 450, L.AORTA: 150, L.IVC: 150, L.PORTAL: 150,
    L.HEPATIC_VEIN: 150, L.KIDNEY_CORTEX: 400, L.KIDNEY_MEDULLA: 350, L.SPLEEN: 350, L.BONE_CORTEX: 20,
    L.BONE_MARROW: 500, L.GALLBLADDER: 150, L.PANCREAS: 480, L.BOWEL: 300, L.GAS: 0, L.LUNG: 15,
}
B_VALUES = (50, 400, 800)


def _lut(table: dict[L, float]) -> np.ndarray:
    return np.array([table[L(k)] for k in range(N_LABELS)], np.float32)


def t1_contrast(phase: str, agent: str, enh: float = 1.0) -> Contrast:
    """Signal table of a T1 phase for ``agent``; ``enh`` scales enhancement."""
    i = T1_PHASES.index(phase)
    eob = agent == "gd-eob"

    def mix(t: tuple[float, ...], ecf: float | None = None) -> float:
        v = ecf if (phase == "transitional" and not eob and ecf is not None) else t[i]
        return t[0] + (v - t[0]) * enh

    lut = np.array([mix(_T1[L(k)], _ECF_TRANS.get(L(k))) for k in range(N_LABELS)], np.float32)
    return Contrast(lut, mix(_TUMOR, 520), 200.0, mix(_CAPSULE, 800), _PERI[i] * enh, _ARTERIES[i] * enh,
                    _HALO[i], -350.0 if (eob and phase == "hepatobiliary") else 0.0, texture=30.0)


@dataclass
class MRSim:
    """A simulated MR exam in memory (signal volumes per sequence)."""

    spec: ExamSpec
    body: Body
    lesions: list[Lesion]
    clinical: dict
    grid: Grid  # dynamic T1 grid: truth lives here
    labels: np.ndarray
    fields: list[LesionFields | None]
    truth: np.ndarray
    grid_t2: Grid
    grid_dwi: Grid
    enh: float
    volumes: dict[str, np.ndarray] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)


def _bias(grid: Grid, rng: np.random.Generator) -> np.ndarray:
    a, b = rng.uniform(-0.25, 0.25, 2)
    x = grid.xs[None, None, :] / 190.0
    y = grid.ys[None, :, None] / 190.0
    return (1 + a * x + b * y + 0.1 * (x * x + y * y)).astype(np.float32)


def simulate_mr(spec: ExamSpec) -> MRSim:
    """Anatomy, lesions and every sequence's volume."""
    agent = spec.agent or "gd-eob"
    v = VENDOR_PROFILES[spec.vendor]
    body = draw_body(exam_rng(spec, "anatomy"))
    clinical = draw_clinical(spec)
    lesions = draw_lesions(exam_rng(spec, "lesions"), body, spec.mvi, spec.grade, clinical["tumor_count"],
                           clinical["main_diameter_mm"], spec.sign_strength)
    clinical["mtd_mm"] = max(les.diameter_mm for les in lesions)
    grid = axial_grid(spec.matrix, 3.0 if v.key == "siemens" else 4.0)
    g2 = axial_grid(spec.matrix, 6.0)
    gd = axial_grid(max(32, spec.matrix // 2), 6.0)
    trng = exam_rng(spec, "timing")
    enh = float(trng.uniform(0.85, 1.15))
    art = float(trng.uniform(22, 30))
    timing = {"early_arterial": art - 10, "arterial": art, "portal": float(trng.uniform(60, 80)),
              "transitional": float(trng.uniform(175, 185)), "hepatobiliary": float(trng.uniform(1190, 1230))}
    labels = label_volume(body, grid)
    fields = [lesion_fields(les, grid) for les in lesions]
    sim = MRSim(spec, body, lesions, clinical, grid, labels, fields, truth_labels(labels, fields), g2, gd, enh,
                timing=timing)
    nrng = exam_rng(spec, "noise")
    sd = (0.03 if spec.noise is None else float(spec.noise)) * 400
    phases = ["pre", "arterial", "portal", "transitional"]
    if spec.hard.early_arterial:
        phases.insert(1, "early_arterial")
    if agent == "gd-eob":
        phases.append("hepatobiliary")
    bias = _bias(grid, nrng)
    for p in phases:
        sim.volumes[p] = np.abs(render(labels, fields, t1_contrast(p, agent, enh), nrng, sd) * bias)
    # T2 fat-sat and in/opposed phase on 6 mm slices
    lab2 = label_volume(body, g2)
    f2 = [lesion_fields(les, g2) for les in lesions]
    bias2 = _bias(g2, nrng)
    t2 = Contrast(_lut(_T2), 420.0, 900.0, 250.0, texture=25.0)
    sim.volumes["t2"] = np.abs(render(lab2, f2, t2, nrng, sd * 0.6) * bias2)
    ff_liver = float(nrng.uniform(0.0, 0.15))
    inn = Contrast(_lut(_T1_IN), 420.0, 250.0, 420.0, texture=20.0)
    in_vol = render(lab2, f2, inn, nrng, 0.0)
    opp_lut = _lut(_T1_IN)
    opp_lut[int(L.LIVER)] *= 1 - 2 * ff_liver
    opp_lut[int(L.FAT)] *= 0.85
    opp = render(lab2, f2, Contrast(opp_lut, 420.0 * (1 - 2 * ff_liver * 0.5), 250.0, 420.0, texture=20.0), nrng, 0.0)
    fat = lab2 == int(L.FAT)
    edge = np.zeros_like(fat)
    for ax in (1, 2):
        for sh in (1, -1):
            edge |= ~fat & np.roll(fat, sh, axis=ax)
    opp[edge & (lab2 != int(L.AIR))] *= 0.25  # India-ink artefact at fat-water borders
    sim.volumes["in"] = np.abs(in_vol * bias2 + nrng.standard_normal(in_vol.shape, dtype=np.float32) * sd)
    sim.volumes["opp"] = np.abs(opp * bias2 + nrng.standard_normal(opp.shape, dtype=np.float32) * sd)
    # DWI + ADC on the coarse grid
    labd = label_volume(body, gd)
    fd = [lesion_fields(les, gd) for les in lesions]
    adc_tumor = {"M0": 1000.0, "M1": 870.0, "M2": 800.0}[spec.grade]
    adc = render(labd, fd, Contrast(_lut(_ADC), adc_tumor, 2200.0, 1200.0, texture=60.0), nrng, 0.0)
    s0_lut = _lut(_T2) * 1.4
    s0 = render(labd, fd, Contrast(s0_lut, 620.0, 1000.0, 300.0, texture=20.0), nrng, 0.0)
    for b in B_VALUES:
        sig = s0 * np.exp(-b * np.clip(adc, 0, None) * 1e-6)
        sim.volumes[f"b{b}"] = np.abs(sig + nrng.standard_normal(sig.shape, dtype=np.float32) * sd * 0.5)
    sim.volumes["adc"] = np.clip(adc + nrng.standard_normal(adc.shape, dtype=np.float32) * 60, 0, 4000) * (s0 > 50)
    if spec.hard.dixon:  # own RNG stream: the exam's other volumes stay as they were
        sim.volumes.update(_dixon_volumes(sim, exam_rng(spec, "dixon"), sd, ff_liver, bias))
    return sim


def _dixon_volumes(sim: MRSim, rng: np.random.Generator, sd: float, ff_liver: float,
                   bias: np.ndarray) -> dict[str, np.ndarray]:
    """3D T1 Dixon on the dynamic grid: water, fat, opposed- and in-phase images."""
    water_lut, fat_lut = _lut(_T1_IN), np.zeros(N_LABELS, np.float32)
    water_lut[int(L.FAT)] = 40.0  # fat-water separation leaves little fat signal
    fat_lut[int(L.FAT)], fat_lut[int(L.BONE_MARROW)] = 850.0, 400.0
    fat_lut[int(L.LIVER)] = 450.0 * ff_liver
    opp_lut = _lut(_T1_IN)
    opp_lut[int(L.LIVER)] *= 1 - 2 * ff_liver
    out = {}
    for name, lut, tumor in (("dixon_water", water_lut, 400.0), ("dixon_fat", fat_lut, 20.0),
                             ("dixon_opp", opp_lut, 400.0), ("dixon_in", _lut(_T1_IN), 420.0)):
        out[name] = np.abs(render(sim.labels, sim.fields, Contrast(lut, tumor, 250.0, tumor, texture=20.0), rng, sd)
                           * bias)
    return out


def mr_plans(sim: MRSim) -> tuple[list[SeriesPlan], list[dt.datetime]]:
    """Every series of the exam plus the study start times."""
    spec, v, g = sim.spec, VENDOR_PROFILES[sim.spec.vendor], sim.grid
    hard, lang = spec.hard, spec.hard.language
    agent = spec.agent or "gd-eob"
    eob = agent == "gd-eob"
    start = exam_start(spec)
    tb = start + dt.timedelta(seconds=240 if eob else 660)
    at = lambda s: tb + dt.timedelta(seconds=s)  # noqa: E731
    after = lambda s: start + dt.timedelta(seconds=s)  # noqa: E731
    fs = spec.field_strength
    style = spec.index + spec.seed
    signed = v.key == "ge"
    bits = 16 if signed else 12
    pixel = {"BitsAllocated": 16, "BitsStored": bits, "HighBit": bits - 1, "PixelRepresentation": int(signed)}
    srng = exam_rng(spec, "split")
    n_studies = 2 if hard.split_studies else 1
    split_at = "hepatobiliary" if (eob and srng.random() < 0.6) else "portal"
    plans: list[SeriesPlan] = []
    number = 0
    axial = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    coronal = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
    contrast = {}
    if not hard.missing_agent:
        contrast = {"ContrastBolusAgent": v.mr_agent[agent], "ContrastBolusRoute": "IV",
                    "ContrastBolusVolume": 10 if eob else 15, "ContrastBolusStartTime": tm(tb),
                    "ContrastFlowRate": [1.0 if eob else 2.0], "ContrastFlowDuration": [10.0 if eob else 7.5],
                    "ContrastBolusIngredient": "GADOLINIUM"}
    freq = 63.87 if fs == 1.5 else 127.74
    common = {"MagneticFieldStrength": fs, "ImagingFrequency": freq, "ImagedNucleus": "1H",
              "BodyPartExamined": "ABDOMEN", "NumberOfAverages": 1, "PatientPosition": "HFS",
              "ProtocolName": "LIVER EOB" if eob else "LIVER DYN", "AcquisitionNumber": 1}
    dyn = {"ScanningSequence": "GR", "SequenceVariant": v.mr_dyn_variant, "ScanOptions": v.mr_dyn_options,
           "MRAcquisitionType": "3D",
           "SequenceName": "THRIVE" if (v.key == "philips" and fs == 1.5) else v.mr_dyn_seq,
           "RepetitionTime": 3.9 if fs == 1.5 else 3.2, "EchoTime": 1.8 if fs == 1.5 else 1.3,
           "FlipAngle": 10 if eob else 12, "EchoTrainLength": 1, "WindowCenter": 500, "WindowWidth": 1000}

    def post(t: dt.datetime) -> dict:
        return contrast if t >= tb else {}

    def add(name: str, role: str, desc: str, vol: np.ndarray, grid: Grid | None, t0: dt.datetime,
            tags: dict, itype=None, study=0, positions=None, orientation=None, spacing=None,
            thick=None, acq=None) -> SeriesPlan:
        nonlocal number
        number += 1
        n = vol.shape[0]
        p = SeriesPlan(
            name=name, role=role, description=desc, number=number, sop_class=MRImageStorage,
            images=to_stored(vol, 1.0, 0.0, signed, bits),
            positions=positions or [grid.position(k) for k in range(n)], orientation=orientation or axial,
            pixel_spacing=spacing or grid.pixel_spacing, thickness=thick or grid.thickness,
            image_type=tuple(itype or v.mr_image_type), series_time=t0, acq_times=acq or [t0] * n,
            study=study, tags={**common, **tags, **post(t0)}, pixel=pixel,
            uid=derive_uid(spec.key(), "series", name))
        if grid is not None and orientation is None:
            p.tags["SpacingBetweenSlices"] = grid.slice_spacing
        plans.append(p)
        return p

    def t1_name(key: str, k: int) -> str:
        if hard.opaque_descriptions:
            return "3D GRE" if key == "pre" else opaque_name("mr", style, number + 1, k, 4)
        return v.mr_name(key, lang)

    def study_of(t: dt.datetime) -> int:
        return 1 if n_studies > 1 and t >= at(sim.timing[split_at] - 5) else 0

    # localizer (coronal cuts from the in-phase volume)
    loc_src = sim.volumes["in"]
    g2 = sim.grid_t2
    js = [int(np.argmin(np.abs(g2.ys - y))) for y in (-30.0, 10.0, 50.0)]
    add("localizer", "other", v.mr_name("localizer", lang), np.stack([loc_src[:, j, :] for j in js]), None,
        after(30), {"ScanningSequence": "GR", "SequenceVariant": "SP", "MRAcquisitionType": "2D",
                    "SequenceName": "*fl2d1" if v.key == "siemens" else "LOC", "RepetitionTime": 8.6,
                    "EchoTime": 4.0, "FlipAngle": 20, "ScanOptions": "", "EchoTrainLength": 1},
        itype=("ORIGINAL", "PRIMARY", "LOCALIZER"), positions=[[g2.xs[0], g2.ys[j], g2.zs[0]] for j in js],
        orientation=coronal, spacing=(6.0, g2.pixel_spacing[1]), thick=8.0)

    def t2_dwi(t0: float) -> None:
        add("t2", ROLE["t2"], v.mr_name("t2", lang), sim.volumes["t2"], sim.grid_t2, after(t0) if not eob else at(t0),
            {"ScanningSequence": "SE", "SequenceVariant": "SK\\SP", "ScanOptions": "FS", "MRAcquisitionType": "2D",
             "SequenceName": {"siemens": "*h2d1_256", "ge": "FRFSE", "philips": "TSE", "canon": "FASE"}[v.key],
             "RepetitionTime": 1400.0, "EchoTime": 90.0, "FlipAngle": 150, "EchoTrainLength": 128,
             "WindowCenter": 400, "WindowWidth": 800},
            study=study_of(after(t0) if not eob else at(t0)))
        tdw = after(t0 + 180) if not eob else at(t0 + 180)
        gd = sim.grid_dwi
        dwi_tags = {"ScanningSequence": "EP", "SequenceVariant": "SK\\SP", "ScanOptions": "FS",
                    "MRAcquisitionType": "2D", "RepetitionTime": 5000.0, "EchoTime": 62.0, "FlipAngle": 90,
                    "EchoTrainLength": 1, "WindowCenter": 300, "WindowWidth": 600}
        dwi_type = v.mr_image_type[:2] + (("DIFFUSION", "NONE") if v.key == "siemens" else v.mr_image_type[2:])
        if v.key == "canon":  # one series per b value
            for b in B_VALUES:
                p = add(f"dwi-b{b}", ROLE["dwi"], v.mr_name("dwi", lang).format(b=b), sim.volumes[f"b{b}"], gd, tdw,
                        {**dwi_tags, "SequenceName": "DWI", "DiffusionBValue": float(b)}, itype=dwi_type,
                        study=study_of(tdw))
        else:
            vols = np.concatenate([sim.volumes[f"b{b}"] for b in B_VALUES])
            n = sim.volumes["b50"].shape[0]
            pos = [gd.position(k) for k in range(n)] * len(B_VALUES)
            p = add("dwi", ROLE["dwi"], v.mr_name("dwi", lang), vols, gd, tdw, dwi_tags, itype=dwi_type,
                    positions=pos, study=study_of(tdw))
            p.per_instance = [{"DiffusionBValue": float(b),
                               "SequenceName": f"*ep_b{b}t" if v.key == "siemens" else "DWI"}
                              for b in B_VALUES for _ in range(n)]
        adc_type = {"siemens": ("DERIVED", "PRIMARY", "DIFFUSION", "ADC"), "philips": ("DERIVED", "PRIMARY", "ADC", "ADC")
                    }.get(v.key, ("DERIVED", "PRIMARY", "ADC"))
        add("adc", ROLE["adc"], v.mr_name("adc", lang), sim.volumes["adc"], gd, tdw + dt.timedelta(seconds=5),
            {**dwi_tags, "SequenceName": "*ep_b50_800" if v.key == "siemens" else "ADC", "WindowCenter": 1200,
             "WindowWidth": 2400}, itype=adc_type, study=study_of(tdw))

    def inopp(t0: float) -> None:
        te = (2.3, 4.6) if fs == 1.5 else (1.15, 2.3)
        g2_ = sim.grid_t2
        n = sim.volumes["in"].shape[0]
        vols = np.concatenate([sim.volumes["opp"], sim.volumes["in"]])
        p = add("inopp", "other", v.mr_name("inopp", lang), vols, g2_, after(t0),
                {"ScanningSequence": "GR", "SequenceVariant": "SP", "ScanOptions": "", "MRAcquisitionType": "2D",
                 "SequenceName": "*fl2d2" if v.key == "siemens" else "DUAL_ECHO", "RepetitionTime": 150.0,
                 "FlipAngle": 70, "EchoTrainLength": 2, "EchoTime": te[0], "WindowCenter": 450, "WindowWidth": 900},
                positions=[g2_.position(k) for k in range(n)] * 2, study=0)
        p.per_instance = [{"EchoTime": te[e], "EchoNumbers": e + 1} for e in range(2) for _ in range(n)]

    if eob:
        inopp(90)
    else:
        t2_dwi(120)
        inopp(480)
    dyn_phases = [p for p in ("pre", "early_arterial", "arterial", "portal", "transitional") if p in sim.volumes]
    pre_t = tb - dt.timedelta(seconds=60)
    if hard.dixon:
        dixon_set(sim, add, dyn, pre_t - dt.timedelta(seconds=45), opaque=hard.opaque_descriptions,
                  name=lambda k: opaque_name("mr", style, number + 1, k, 4))
    times = {p: (pre_t if p == "pre" else at(sim.timing[p])) for p in dyn_phases}
    dyn_plans: dict[str, SeriesPlan] = {}
    if hard.multiphase_series:
        vols = np.concatenate([sim.volumes[p] for p in dyn_phases])
        n = sim.volumes["pre"].shape[0]
        pos = [g.position(k) for k in range(n)] * len(dyn_phases)
        # GE keeps one AcquisitionTime for the whole series and puts each phase's offset in
        # TriggerTime (ms); the others stamp every phase with its own AcquisitionTime.
        acq = [pre_t if v.key == "ge" else times[p] for p in dyn_phases for _ in range(n)]
        mp = add("dynamic", "other", t1_name("dynamic", 1), vols, g, pre_t, {**dyn, "NumberOfTemporalPositions":
                 len(dyn_phases)}, positions=pos, acq=acq, study=0)
        mp.tags.update(contrast)  # the series spans the injection
        mp.per_instance = [{"TemporalPositionIdentifier": i + 1, **(
                            {"TriggerTime": round((times[p] - pre_t).total_seconds() * 1000.0, 1)}
                            if v.key == "ge" else {})}
                           for i, p in enumerate(dyn_phases) for _ in range(n)]
        mp.note["phases"] = {str(i + 1): ROLE[p] for i, p in enumerate(dyn_phases)}
        if "early_arterial" in dyn_phases:
            mp.note["early_arterial_tpi"] = str(dyn_phases.index("early_arterial") + 1)
    else:
        for k, p in enumerate(dyn_phases):
            dyn_plans[p] = add(p, ROLE[p], t1_name(p, k + 1), sim.volumes[p], g, times[p],
                               {**dyn, "AcquisitionNumber": k + 1}, study=study_of(times[p]))
        if "early_arterial" in dyn_plans:
            dyn_plans["early_arterial"].note["early_arterial"] = True
    if hard.subtraction:
        subtractions(sim, add, dyn, dyn_plans, times, g, study_of)
    if eob:
        t2_dwi(300)
        th = at(sim.timing["hepatobiliary"])
        dyn_plans["hepatobiliary"] = add("hepatobiliary", ROLE["hepatobiliary"], t1_name("hepatobiliary", 9),
                                         sim.volumes["hepatobiliary"], g, th, {**dyn, "FlipAngle": 25},
                                         study=study_of(th))
    if hard.reformats:
        last = "hepatobiliary" if eob else "transitional"
        src_vol = sim.volumes[last]
        ys = [j for j in range(0, len(g.ys), max(1, int(round(4.0 / g.pixel_spacing[0])))) if -90 <= g.ys[j] <= 70]
        t0 = (dyn_plans[last].series_time if last in dyn_plans else at(sim.timing[last])) + dt.timedelta(seconds=40)
        p = add("coronal", "other", v.mr_name("coronal", lang), np.stack([src_vol[:, j, :] for j in ys]), None, t0,
                dyn, itype=("DERIVED", "SECONDARY", "MPR"), positions=[[g.xs[0], g.ys[j], g.zs[0]] for j in ys],
                orientation=coronal, spacing=(g.thickness, g.pixel_spacing[1]), thick=g.thickness,
                study=study_of(t0))
        if last in dyn_plans:
            p.note["duplicates"] = dyn_plans[last].uid
        art = sim.volumes["arterial"]
        mip = np.stack([art[max(0, k - 2):k + 3].max(axis=0) for k in range(0, art.shape[0], 2)])
        pos = [g.position(k) for k in range(0, art.shape[0], 2)]
        ta = times["arterial"] + dt.timedelta(seconds=600)
        p = add("mip", "other", f"MIP {t1_name('arterial', 3)}", mip, None, ta, dyn,
                itype=("DERIVED", "SECONDARY", "MIP"), positions=pos, spacing=g.pixel_spacing,
                thick=5 * g.thickness, study=study_of(times["arterial"]))
        if "arterial" in dyn_plans:
            p.note["duplicates"] = dyn_plans["arterial"].uid
    study_times = [start]
    if n_studies > 1:
        study_times.append(at(sim.timing[split_at] - 5))
    return plans, study_times


# --- traps: series a selector must never take for a phase of the dynamic series ----------
DIXON_MAPS = (("water", "dixon_water"), ("fat", "dixon_fat"), ("opp", "dixon_opp"), ("in", "dixon_in"))


def dixon_set(sim: MRSim, add, dyn: dict, t0: dt.datetime, opaque: bool, name) -> None:
    """A 3D T1 Dixon pre-contrast acquisition written before the fat-sat pre series: water,
    fat, opposed- and in-phase reconstructions at one acquisition time, with the dynamic's
    TR and flip angle, no fat-saturation pulse, two echoes (opposed, in phase at the field
    strength); the water and fat maps carry the first echo's time."""
    v, fs = VENDOR_PROFILES[sim.spec.vendor], sim.spec.field_strength
    te = (2.3, 4.6) if fs == 1.5 else (1.15, 2.3)
    tr = max(dyn["RepetitionTime"], te[1] + 1.2) if fs == 1.5 else dyn["RepetitionTime"]
    for k, (kind, vol) in enumerate(DIXON_MAPS):
        desc = name(k + 1) if opaque else v.mr_dixon_name(kind)
        add(f"dixon_{kind}", "other", desc, sim.volumes[vol], sim.grid, t0,
            {**dyn, "RepetitionTime": tr, "EchoTime": te[1] if kind == "in" else te[0], "ScanOptions": "",
             "SequenceName": {"siemens": "*fl3d2", "ge": "LAVA-Flex", "philips": "mDIXON", "canon": "WFS"}[v.key],
             "EchoTrainLength": 2}, itype=DIXON_IMAGE_TYPES[v.key][kind])


def subtractions(sim: MRSim, add, dyn: dict, dyn_plans: dict, times: dict, grid: Grid, study_of) -> None:
    """Arterial minus pre and portal minus pre, as consoles compute them inline: derived
    images at their source's acquisition time, named and typed by the vendor's habit."""
    v = VENDOR_PROFILES[sim.spec.vendor]
    for phase in ("arterial", "portal"):
        if phase not in sim.volumes or phase not in times:
            continue
        vol = np.clip(sim.volumes[phase] - sim.volumes["pre"], 0, None)
        src = dyn_plans.get(phase)
        desc = f"{src.description if src else v.mr_name(phase, 'en')}_SUB" if v.key != "ge" else \
            f"SUB {src.description if src else v.mr_name(phase, 'en')}"
        p = add(f"sub_{phase}", "other", desc, vol, grid, times[phase] + dt.timedelta(seconds=20),
                dyn, itype=SUBTRACTION_IMAGE_TYPES[v.key], acq=[times[phase]] * vol.shape[0],
                study=study_of(times[phase]))  # the source's study when the exam is split
        if src is not None:
            p.note["subtraction_of"] = src.uid
