"""The ground truth a selector, an ROI step and a model are scored against.

Roles come only from ROLES; anything a recipe must not consume (localizers, scouts,
monitoring, dose screen saves, MIP/reformats, thin duplicates, early arterial,
in/opposed phase) is "other", with notes saying what it duplicates.
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
