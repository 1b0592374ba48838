"""Write one exam: images, annotation, truth masks, clinical sidecar, manifest entry.

Truth layout (``DIR/truth/<accession>/``): ``lesions.npy`` uint8 (slices, rows, cols),
0 = background, k = lesion k of the manifest's ``lesions`` list (1-based); ``liver.npy``
uint8 0/1; ``geometry.json`` with the ImagePositionPatient of each slice, orientation,
pixel spacing, slice thickness and ``series``: the UIDs whose instances lie exactly on
this grid (slice i = InstanceNumber i+1, or frame i+1 of an Enhanced instance; for a
multiphase series, within each temporal position). CT: the 5 mm axial phases; MR: the
dynamic 3D T1 series. The hard case ``enhanced_multiframe`` writes each image series as
one Enhanced multi-frame instance (:mod:`mvi_node.synth.enhanced`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np

from mvi_node.synth.anatomy import L
from mvi_node.synth.annotations import write_gsps, write_roi_sr, write_seg
from mvi_node.synth.clinical import patient_attributes
from mvi_node.synth.dicomio import SeriesPlan, make_context, write_series
from mvi_node.synth.lesions import lesion_summary
from mvi_node.synth.manifest import recipes, write_json
from mvi_node.synth.spec import ExamSpec


def simulate(spec: ExamSpec, phases: tuple[str, ...] | None = None):
    """In-memory exam (CTSim or MRSim) without writing anything.

    ``phases`` (CT only) limits rendering, e.g. ("arterial",) for training crops.
    """
    if spec.modality == "ct":
        from mvi_node.synth.ct import simulate_ct

        return simulate_ct(spec, phases)
    from mvi_node.synth.mr import simulate_mr

    return simulate_mr(spec)


def _ref_for_annotation(spec: ExamSpec, plans: list[SeriesPlan]) -> tuple[SeriesPlan, str | None]:
    want = {"arterial": ("ct_arterial", "mr_arterial"), "portal": ("ct_portal_venous", "mr_portal_venous")}
    roles = want.get(spec.seg_on, want["arterial"])
    for p in plans:
        if p.role in roles:
            return p, None
    for p in plans:
        for tpi, r in p.note.get("phases", {}).items():
            if r in roles:
                return p, tpi
    raise ValueError("no series to annotate")


def write_exam(spec: ExamSpec, out: Path | str) -> dict[str, Any]:
    """Write the exam of ``spec`` under ``out``; return its manifest entry."""
    out = Path(out)
    sim = simulate(spec)
    if spec.modality == "ct":
        from mvi_node.synth.ct import ct_plans

        plans, study_times = ct_plans(sim)
    else:
        from mvi_node.synth.mr import mr_plans

        plans, study_times = mr_plans(sim)
    patient = patient_attributes(sim.clinical, study_times[0], spec.index + spec.seed)
    ctx = make_context(spec, out, study_times, patient, non_ascii=spec.hard.language != "en")
    paths: dict[str, list[Path]] = {}
    if spec.hard.enhanced_multiframe:
        from mvi_node.synth.enhanced import write_enhanced_series as write
    else:
        write = write_series
    for plan in plans:
        paths[plan.uid] = write(ctx, plan)
    entry: dict[str, Any] = {
        "patient_id": spec.patient_id,
        "accession_number": spec.accession,
        "modality": spec.modality.upper(),
        "study_instance_uids": list(ctx.study_uids),
        "frame_of_reference_uid": ctx.frame_uid,
        "mvi": spec.mvi,
        "grade": spec.grade,
        "vendor": spec.vendor,
    }
    if spec.modality == "mr":
        entry["agent"] = spec.agent
        entry["field_strength"] = spec.field_strength
    entry["hard_cases"] = {**spec.hard.as_dict(), "thin": spec.thin, "seg_on": spec.seg_on}
    if spec.realism != "basic":
        entry["realism"] = spec.realism
    entry["series"] = {p.uid: p.role for p in plans}
    entry["series_detail"] = {
        p.uid: {"number": p.number, "description": p.description, "instances": int(p.images.shape[0]),
                "study_instance_uid": ctx.study_uids[p.study]} for p in plans}
    phases = {p.uid: p.note["phases"] for p in plans if "phases" in p.note}
    if phases:
        entry["phases"] = phases
    for p in plans:
        if p.note.get("early_arterial"):
            entry["early_arterial"] = p.uid
        if "early_arterial_tpi" in p.note:
            entry["early_arterial"] = f"{p.uid}#{p.note['early_arterial_tpi']}"
    dups = {p.uid: p.note["duplicates"] for p in plans if "duplicates" in p.note}
    if dups:
        entry["duplicates"] = dups
    # annotation on the reference phase (same grid as the truth)
    ref, tpi = _ref_for_annotation(spec, plans)
    nz = sim.truth.shape[0]
    block = (int(tpi) - 1) if tpi else 0
    indices = list(range(block * nz, block * nz + nz))
    ref_tag = f"{ref.uid}#{tpi}" if tpi else ref.uid
    when = max(p.series_time for p in plans) + dt.timedelta(minutes=30)
    if spec.annotations == "seg":
        uid, _ = write_seg(ctx, ref, paths[ref.uid], indices, sim.truth, 300, when)
        entry["series"][uid] = "seg"
        entry["seg_reference"] = ref_tag
        entry["series_detail"][uid] = {"number": 300, "description": "Tumor SEG", "instances": 1,
                                       "study_instance_uid": ctx.study_uids[ref.study]}
    elif spec.annotations == "circle":
        uid, _ = write_gsps(ctx, ref, paths[ref.uid], indices, sim.truth, 301, when)
        entry["series"][uid] = "annotation"
        entry["annotation_reference"] = ref_tag
        entry["series_detail"][uid] = {"number": 301, "description": "Key images ROI", "instances": 1,
                                       "study_instance_uid": ctx.study_uids[ref.study]}
    elif spec.annotations == "sr":
        uid, _ = write_roi_sr(ctx, ref, paths[ref.uid], indices, sim.truth, 302, when)
        entry["series"][uid] = "annotation"
        entry["annotation_reference"] = ref_tag
        entry["series_detail"][uid] = {"number": 302, "description": "Tumor ROI report", "instances": 1,
                                       "study_instance_uid": ctx.study_uids[ref.study]}
    elif spec.annotations != "none":
        raise ValueError(f"annotations must be seg|circle|sr|none, not {spec.annotations!r}")
    entry["lesions"] = [lesion_summary(les) for les in sim.lesions]
    clinical = {k: v for k, v in sim.clinical.items() if k != "main_diameter_mm"}
    entry["clinical"] = clinical
    entry["recipes"] = recipes(entry)
    # truth masks and clinical sidecar
    tdir = out / "truth" / spec.accession
    tdir.mkdir(parents=True, exist_ok=True)
    np.save(tdir / "lesions.npy", sim.truth)
    np.save(tdir / "liver.npy", (sim.labels == int(L.LIVER)).astype(np.uint8))
    g = sim.grid
    grid_pos = [g.position(k) for k in range(nz)]
    grid_series = [p.uid for p in plans if p.plane and p.images.shape[1:] == sim.truth.shape[1:]
                   and p.images.shape[0] % nz == 0 and p.positions[:nz] == grid_pos
                   and list(p.orientation) == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0] and p.thickness == g.thickness]
    write_json(tdir / "geometry.json", {
        "shape": list(sim.truth.shape), "axes": ["slice", "row", "column"],
        "image_position_patient": grid_pos,
        "image_orientation_patient": [1, 0, 0, 0, 1, 0], "pixel_spacing": list(g.pixel_spacing),
        "slice_thickness": g.thickness, "frame_of_reference_uid": ctx.frame_uid, "series": grid_series,
        "lesions_values": "0 background, k = manifest lesions[k-1]",
    })
    entry["truth"] = {"dir": f"truth/{spec.accession}", "series": grid_series}
    write_json(out / "clinical" / f"{spec.accession}.json",
               {"patient_id": spec.patient_id, "accession_number": spec.accession, **clinical})
    entry["dicom_dir"] = f"dicom/{spec.patient_id}/{spec.accession}"
    return entry

