"""The selection report: JSON-serialisable dicts and a text rendering.

Shape: ``{"studies": [{"study_instance_uids", "patient_id", "accession_number", "dynamic_sequence",
"agent", "series": [{"series_instance_uid", "modality", "series_description", "role",
"reason", ...}], "recipes": [{"name", "inputs": {role: uid}}], "not_qualified":
[{"name", "missing", "why"}], "notes": [...]}], "notes": [...]}``. A phase of a
multi-phase series is ``<SeriesInstanceUID>#<TemporalPositionIdentifier>``.
"""

from __future__ import annotations

from typing import Any, Sequence

from mvi_node.select.recipes import RecipeNeeds, evaluate
from mvi_node.select.engine import Exam


def _series_entry(unit) -> dict[str, Any]:
    ds, f = unit.ds, unit.features
    entry: dict[str, Any] = {
        "series_instance_uid": unit.uid,
        "modality": str(ds.get("Modality", "") or ""),
        "series_description": str(ds.get("SeriesDescription", "") or ""),
        "series_number": _int(ds.get("SeriesNumber")),
        "role": unit.role,
        "reason": unit.reason,
        "rule": unit.rule,
        "instances": f.get("instances"),
    }
    if unit.phase is not None:
        entry["temporal_position"] = unit.phase
    if f.get("delay_s") is not None:
        entry["delay_s"] = f["delay_s"]
        entry["timing_basis"] = f.get("timing_basis")
    if unit.candidate_role:
        entry["candidate_role"] = unit.candidate_role
    return entry


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def exam_report(exam: Exam, needs: Sequence[RecipeNeeds] = ()) -> dict[str, Any]:
    winners = {role: u.uid for role, u in exam.winners().items()}
    ok, missing = evaluate(winners, needs, exam.modalities)
    unknown = [u.uid for u in exam.units if u.features.get("timing_phase") == "unknown"]
    for m in missing:
        if unknown:
            m["why"] += f"; contrast timing undetermined for {', '.join(unknown)}"
    notes = list(exam.notes)
    usable = [u for u in exam.units if u.role != "other"]
    if not usable:
        kinds = sorted({u.reason.split(" (rule")[0].split(":")[0] for u in exam.units})
        notes.append(f"no usable series: all {len(exam.units)} series are 'other' ({'; '.join(kinds)})")
    return {
        "study_instance_uids": exam.study_uids,
        "patient_id": exam.patient_id,
        "accession_number": exam.accession_number,
        "agent": exam.agent,
        "agent_basis": exam.agent_basis,
        "dynamic_sequence": exam.dynamic_sequence,
        "series": [_series_entry(u) for u in exam.units],
        # ROI sources for the recipes: segmentations and annotations found in the exam
        "annotations": [u.uid for u in exam.units if u.role in ("seg", "annotation")],
        "recipes": ok,
        "not_qualified": missing,
        "notes": notes,
    }


def build_report(exams: list[Exam], source: str = "", needs: Sequence[RecipeNeeds] = ()) -> dict[str, Any]:
    """``needs``: the recipes to judge each exam against (the served ones); none: roles only."""
    report: dict[str, Any] = {"studies": [exam_report(e, needs) for e in exams], "notes": []}
    if not exams:
        report["notes"].append(f"no DICOM series found{' in ' + source if source else ''}")
    return report


def format_text(report: dict[str, Any]) -> str:
    lines: list[str] = []
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    for study in report["studies"]:
        lines.append(
            f"exam patient={study['patient_id'] or '?'} accession={study['accession_number'] or '?'} "
            f"agent={study['agent']} studies={', '.join(study['study_instance_uids'])}"
        )
        if study.get("dynamic_sequence"):
            lines.append(f"  dynamic T1 sequence: {study['dynamic_sequence']}")
        for s in study["series"]:
            lines.append(f"  [{s['role']:<17}] {s['modality']:<3} #{s['series_number']} {s['series_description']!r} {s['series_instance_uid']}")
            lines.append(f"      {s['reason']}")
        for r in study["recipes"]:
            lines.append(f"  recipe {r['name']}: " + ", ".join(f"{k}={v}" for k, v in r["inputs"].items()))
        for r in study["not_qualified"]:
            lines.append(f"  recipe {r['name']}: not qualified ({r['why']})")
        for note in study["notes"]:
            lines.append(f"  note: {note}")
    return "\n".join(lines)
