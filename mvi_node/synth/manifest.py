"""The ground truth a selector, an ROI step and a model are scored against.

Roles come only from ROLES; anything a recipe must not consume (localizers, scouts,
monitoring, dose screen saves, MIP/reformats, thin duplicates, early arterial,
in/opposed phase) is "other", with notes saying what it duplicates.

``manifest.json``: {"version", "generator", "modality", "seed", "patients", "options",
"roles", "studies": [...]}; each study (one exam = one accession):
- patient_id, accession_number, modality, study_instance_uids (several when the exam is
  split; all share PatientID, AccessionNumber and frame_of_reference_uid), mvi, grade
  (M0/M1/M2), vendor, agent + field_strength (MR), hard_cases (the switches used);
- series {uid: role}; series_detail {uid: number, description, instances,
  study_instance_uid}; phases {uid: {TemporalPositionIdentifier: role}} for a
  multiphase series (whose own role is "other");
- early_arterial: uid (or "uid#tpi") of an early arterial series kept as "other" when a
  late one exists; duplicates {uid: uid of the preferred 3-5 mm axial series} for thin
  recons, thick averages, coronal reformats and MIPs;
- seg_reference / annotation_reference: the series ("uid#tpi") the SEG / GSPS was drawn on;
- lesions [{center_mm (LPS), diameter_mm, radii_mm, mvi_signs {sign: strength 0..1,
  capsule}, necrosis}], clinical {age, sex, afp_ng_ml, child_pugh, hbsag, hcv,
  tumor_count, mtd_mm}, recipes {"ct_ap_resnet18": {"ct_arterial": uid}} /
  {"mr_3seq_grade": {"mr_t1_pre", "mr_portal_venous", "mr_transitional"}},
  truth {dir, series}, dicom_dir.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROLES: tuple[str, ...] = (
    "ct_non_contrast", "ct_arterial", "ct_portal_venous", "ct_delayed",
    "mr_t1_pre", "mr_arterial", "mr_portal_venous", "mr_transitional", "mr_hepatobiliary",
    "mr_t2", "mr_dwi", "mr_adc", "seg", "annotation", "other",
)
MANIFEST_VERSION = 1


def role_ref(study: dict[str, Any], role: str) -> str | None:
    """Series UID (or "uid#tpi" inside a multiphase series) that has ``role``."""
    for uid, r in study["series"].items():
        if r == role:
            return uid
    for uid, phases in study.get("phases", {}).items():
        for tpi, r in phases.items():
            if r == role:
                return f"{uid}#{tpi}"
    return None


def recipes(study: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Inputs of the recipes this exam can feed."""
    out: dict[str, dict[str, str]] = {}
    art = role_ref(study, "ct_arterial")
    if art:
        out["ct_ap_resnet18"] = {"ct_arterial": art}
    need = ("mr_t1_pre", "mr_portal_venous", "mr_transitional")
    refs = {r: role_ref(study, r) for r in need}
    if all(refs.values()):
        out["mr_3seq_grade"] = refs  # type: ignore[assignment]
    return out


def write_manifest(out: Path, header: dict[str, Any], studies: list[dict[str, Any]]) -> Path:
    for s in studies:
        bad = {r for r in s["series"].values() if r not in ROLES}
        bad |= {r for ph in s.get("phases", {}).values() for r in ph.values() if r not in ROLES}
        if bad:
            raise ValueError(f"roles outside the vocabulary: {sorted(bad)}")
    doc = {"version": MANIFEST_VERSION, **header, "roles": list(ROLES), "studies": studies}
    path = Path(out) / "manifest.json"
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")
    return path


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
