"""Which series of a study to retrieve, and why: the selection rules on C-FIND answers.

A SERIES-level C-FIND answer carries Modality, SeriesDescription, SeriesNumber,
SeriesTime, BodyPartExamined (PS3.4 C.6.2.1.2), not ImageOrientationPatient, pixel
attributes or MR parameters. Each answer becomes a one-dataset unit whose header-only
features say what is known (an image modality is an image, orientation and MR weighting
are unknown) and the node's own rules and preferences give it a role. The series a
qualifying served recipe reads, and the objects that may hold its tumour outline (SEG,
RTSTRUCT, GSPS, SR), are retrieved; nothing else is. A study no served recipe qualifies
for is skipped with the recipes' reasons. After the retrieve, the staged study goes
through the node's full selection on complete headers as every routed study does.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from pydicom.dataset import Dataset

from mvi_node.replay.request import pattern
from mvi_node.roi.sources import NODE_MANUFACTURER
from mvi_node.select.engine import select_exam
from mvi_node.select.recipes import RecipeNeeds, evaluate
from mvi_node.select.rules import RuleSet
from mvi_node.select.series import Unit, build_units, unit_features

#: modalities whose series are images (a C-FIND answer has no SOP class or pixel module)
IMAGE_MODALITIES = {"CT", "MR", "PT", "US", "CR", "DX", "MG", "NM", "XA", "RF", "OT", "SC"}
#: objects that may hold the tumour outline; an SR's content is not visible in the answer,
#: so every SR series but the node's own results is retrieved (SRs are small)
OUTLINE_MODALITIES = {"SEG", "RTSTRUCT", "PR", "SR"}
OUTLINE_ROLES = {"seg", "annotation"}
#: rough bytes per instance for the dry run's estimate (uncompressed 512 x 512 x 16 bit)
BYTES_PER_INSTANCE = {"CT": 525_000, "MR": 135_000, "SEG": 2_000_000, "SR": 20_000, "PR": 10_000,
                      "RTSTRUCT": 500_000}


def _text(ds: Dataset, kw: str) -> str:
    return str(ds.get(kw, "") or "").strip()


def series_count(ds: Dataset) -> int | None:
    try:
        return int(ds.get("NumberOfSeriesRelatedInstances"))
    except (TypeError, ValueError):
        return None


def header_unit(answer: Dataset, study: Dataset) -> Unit:
    """A unit from one series answer, with the features a header-only view allows."""
    ds = Dataset()
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesDescription", "SeriesNumber",
               "SeriesTime", "BodyPartExamined", "ProtocolName", "Manufacturer"):
        if kw in answer and answer.get(kw) not in (None, ""):
            setattr(ds, kw, answer.get(kw))
    for kw in ("PatientID", "AccessionNumber", "StudyDescription"):  # exam grouping: kept in memory only
        if kw in study and study.get(kw) not in (None, ""):
            setattr(ds, kw, study.get(kw))
    uid = str(answer.SeriesInstanceUID)
    features = unit_features([ds])
    modality = _text(ds, "Modality")
    features["is_image"] = modality in IMAGE_MODALITIES
    features["orientation"] = "unknown" if features["is_image"] else "none"
    features["instances"] = series_count(answer) or 1
    # positions are unknown: assume a stack (a rule on few positions must not fire on none)
    features["distinct_positions"] = features["instances"]
    features["header_only"] = True
    return Unit(uid, uid, str(answer.get("StudyInstanceUID") or study.StudyInstanceUID), None, [ds], features)


def _own_result(answer: Dataset, own_manufacturer: str) -> bool:
    # the node's own SR, captures and SEG (Manufacturer "mvi-node project") are results, not inputs
    return bool(own_manufacturer) and _text(answer, "Manufacturer").lower().startswith(own_manufacturer.lower())


def plan_study(study: Dataset, answers: Sequence[Dataset], rules: RuleSet, needs: Sequence[RecipeNeeds],
               series_pattern: str | None = None, own_manufacturer: str = NODE_MANUFACTURER,
               headers: Sequence[Dataset] | None = None) -> dict[str, Any]:
    """The plan of one study: every series with its role, reason and whether it is
    retrieved; ``skip`` says why nothing is (no series, no qualifying recipe).
    ``headers``: the study's complete headers where the source has them (a folder):
    selection then runs on those, as it does on staged studies."""
    study_uid = str(study.StudyInstanceUID)
    answers = [a for a in answers if "SeriesInstanceUID" in a and not _own_result(a, own_manufacturer)]
    plan: dict[str, Any] = {"study_uid": study_uid, "study_date": _text(study, "StudyDate"),
                            "modalities": sorted({_text(a, "Modality") for a in answers} - {""}),
                            "series": [], "recipes": [], "skip": ""}
    if not answers:
        plan["skip"] = "the archive lists no series for the study"
        return plan
    kept = {str(a.SeriesInstanceUID) for a in answers}
    if headers:
        units = build_units([h for h in headers if str(h.get("SeriesInstanceUID", "")) in kept])
    else:
        units = [header_unit(a, study) for a in answers]
    exam = select_exam(units, rules)
    qualified, missing = evaluate({r: u.uid for r, u in exam.winners().items()}, needs, exam.modalities)
    needed_roles = {role for q in qualified for role in q["inputs"]}
    series_re = pattern(series_pattern)
    by_uid = {str(a.SeriesInstanceUID): a for a in answers}
    seen: set[str] = set()
    # a series split into units (a stray image, phases) is listed once: by its first unit,
    # retrieved when any of its units is needed
    needed_series = {u.series_uid for u in exam.units if u.role in needed_roles} if qualified else set()
    for u in exam.units:
        if u.series_uid in seen:
            continue
        seen.add(u.series_uid)
        answer = by_uid[u.series_uid]
        modality = _text(answer, "Modality")
        count = series_count(answer)
        why = ""
        needed = False
        roles = {v.role for v in exam.units if v.series_uid == u.series_uid}
        if u.series_uid in needed_series:
            names = [q["name"] for q in qualified if roles & set(q["inputs"])]
            needed, why = True, f"input of {', '.join(names)}"
        elif qualified and (u.role in OUTLINE_ROLES or modality in OUTLINE_MODALITIES):
            needed, why = True, "may hold the tumour outline (annotation first, before the automatic ROI)"
        if needed and series_re is not None and not series_re.search(_text(answer, "SeriesDescription")):
            needed, why = False, "series description does not match the replay's pattern"
        plan["series"].append({
            "series_uid": u.series_uid, "modality": modality, "number": _text(answer, "SeriesNumber"),
            "description": _text(answer, "SeriesDescription"),
            "role": next((r for r in roles if r in needed_roles), u.role or "other"), "reason": u.reason,
            "retrieve": needed, "why": why or "not needed by a qualifying recipe", "instances": count,
            "bytes": (count or 0) * BYTES_PER_INSTANCE.get(modality, 525_000) if needed else 0,
        })
    plan["recipes"] = [q["name"] for q in qualified]
    if not qualified:
        why = "; ".join(f"{m['name']}: {m['why']}" for m in missing)
        if not why:
            shown = "/".join(plan["modalities"]) or "these"
            why = f"no served recipe reads {shown} exams"
        plan["skip"] = f"no recipe qualifies ({why})"
    elif not any(s["retrieve"] and s["role"] in needed_roles for s in plan["series"]):
        plan["skip"] = "the replay's series pattern leaves no input series"
    return plan


def totals(plans: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Studies, series to retrieve, instances and estimated bytes of a set of plans."""
    out = {"studies": 0, "retrieve_studies": 0, "skipped": 0, "series": 0, "instances": 0, "bytes": 0}
    for p in plans:
        out["studies"] += 1
        if p.get("skip"):
            out["skipped"] += 1
            continue
        out["retrieve_studies"] += 1
        for s in p["series"]:
            if s["retrieve"]:
                out["series"] += 1
                out["instances"] += s["instances"] or 0
                out["bytes"] += s["bytes"]
    return out


def public_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """A plan as the API and the manifest show it (UIDs, roles, counts; no identifiers)."""
    return {k: v for k, v in plan.items() if k not in ("patient_id", "accession_number")}
