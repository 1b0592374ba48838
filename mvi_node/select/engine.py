"""Roles for every series of an exam: grouping, two rule passes, timing, preferences.

1. **Exams.** Studies of one patient (PatientID) that share a non-empty AccessionNumber
   or a FrameOfReferenceUID are one exam: some sites send one StudyInstanceUID per phase.
2. **MR image kinds and the dynamic sequence** (mr_headers.py, sequence.py): Dixon
   water/fat/in/opposed-phase and subtraction images (ImageType, EchoTime pairs,
   description); which T1 GRE sequence is the dynamic series, and whether each series
   is that sequence (``sequence_match``): T1 pre must be.
3. **First pass.** Rules are tried without the exam-relative features (timing, rank,
   exam agent). What this pass says about a phase (from descriptions, or the absence of
   ContrastBolusAgent beside series that have one) anchors the timeline, and it decides
   which series take part in it (CT axial images; MR T1 gradient-echo) and which never
   do (localizers, MIPs, DWI...).
4. **Timeline** (timeline.py): delay after contrast from ContrastBolusStartTime, or
   estimated from the order and spacing of the acquisitions.
5. **Agent.** ContrastBolusAgent / ContrastBolusAgentSequence name it; when missing, an
   MR series >= 10 min after contrast implies gadoxetate (such a phase only exists with
   Gd-EOB) and the reason says so.
6. **Second pass.** All rules; the first match (highest priority) gives role and reason.
7. **Preferences.** One series per role (seg/annotation excepted); see :func:`preference`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from datetime import datetime, timezone
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pydicom.dataset import Dataset

from mvi_node.select import timeline
from mvi_node.select.mr_headers import mark_echo_pairs
from mvi_node.select.rules import CONTEXT_FEATURES, RuleSet, load_rules
from mvi_node.select.sequence import mark_sequence_match
from mvi_node.select.series import Unit, build_units, read_headers

CT_PHASE_ROLES = {"ct_non_contrast", "ct_arterial", "ct_portal_venous", "ct_delayed"}
MR_DYNAMIC_ROLES = {"mr_t1_pre", "mr_arterial", "mr_portal_venous", "mr_transitional", "mr_hepatobiliary"}
MULTI_ROLES = {"seg", "annotation", "other"}  # roles several series may hold
ROLE_PHASE = {
    "ct_non_contrast": "non_contrast",
    "mr_t1_pre": "non_contrast",
    "ct_arterial": "arterial",
    "mr_arterial": "arterial",
    "ct_portal_venous": "portal_venous",
    "mr_portal_venous": "portal_venous",
    "ct_delayed": "delayed",
    "mr_transitional": "delayed",
    "mr_hepatobiliary": "hepatobiliary",
}
_TARGET_DELAY = {"ct_delayed": 180.0, "mr_transitional": 180.0, "mr_hepatobiliary": 1200.0}
_EARLY_RE = re.compile(r"early|früh|frueh|precoce|precoz|tempran|(?<![a-z])(eap|ea)(?![a-z])|早期動脈|动脉早期|早期动脉", re.I)
_LATE_ART_RE = re.compile(r"late|spät|spaet|tardi|(?<![a-z])lap(?![a-z])|後期動脈|动脉晚期|晚期动脉", re.I)


@dataclass
class Exam:
    study_uids: list[str]
    patient_id: str
    accession_number: str
    units: list[Unit]
    agent: str = "n/a"
    agent_basis: str = ""
    dynamic_sequence: str = ""  # the dynamic T1 GRE sequence in words (sequence.py)
    notes: list[str] = field(default_factory=list)
    #: related studies that were still being received when the exam was assembled
    #: (the job ran after ``[completion] exam_wait_seconds`` with what it had)
    pending_studies: list[str] = field(default_factory=list)

    @property
    def modalities(self) -> frozenset[str]:
        """Modalities of the exam's series (CT, MR, SEG, SR ...)."""
        return frozenset(str(u.ds.get("Modality", "") or "") for u in self.units)

    def winners(self) -> dict[str, Unit]:
        """The unit holding each single role (for mr_dwi: the highest b-value)."""
        out: dict[str, Unit] = {}
        for u in self.units:
            if not u.role or u.role in MULTI_ROLES:
                continue
            if u.role == "mr_dwi" and u.role in out:
                if (u.features.get("b_value_max") or 0) <= (out[u.role].features.get("b_value_max") or 0):
                    continue
            out[u.role] = u
        return out


def _text(ds: Dataset, kw: str) -> str:
    return str(ds.get(kw, "") or "").strip()


def study_time(ds: Dataset) -> float | None:
    """StudyDate + StudyTime as epoch seconds (the site's local time read as UTC: only
    differences are used), None when either is missing or malformed."""
    date, tm = _text(ds, "StudyDate"), _text(ds, "StudyTime").replace(":", "")
    if len(date) != 8 or not date.isdigit() or len(tm) < 2 or not tm.split(".")[0].isdigit():
        return None
    whole, _, frac = tm.partition(".")
    whole = whole.ljust(6, "0")[:6]
    try:
        t = datetime(int(date[:4]), int(date[4:6]), int(date[6:]), int(whole[:2]), int(whole[2:4]),
                     int(whole[4:6]), tzinfo=timezone.utc)
    except ValueError:
        return None
    return t.timestamp() + (float("0." + frac) if frac.isdigit() else 0.0)


def group_exams(units: list[Unit], window_seconds: float = 0.0) -> list[list[Unit]]:
    """Union of studies sharing PatientID and (AccessionNumber or FrameOfReferenceUID),
    and, when ``window_seconds`` > 0, studies of one patient whose study date/time lie
    within that window of each other (sites that give every part its own accession)."""
    by_study: dict[str, list[Unit]] = {}
    for u in units:
        by_study.setdefault(u.study_uid, []).append(u)
    parent = {s: s for s in by_study}

    def find(s: str) -> str:
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    seen: dict[tuple, str] = {}
    for study, items in sorted(by_study.items()):
        patient = _text(items[0].ds, "PatientID")
        keys = set()
        for u in items:
            acc = _text(u.ds, "AccessionNumber")
            if acc:
                keys.add(("acc", patient, acc))
            for_uid = _text(u.ds, "FrameOfReferenceUID")
            if for_uid:
                keys.add(("for", patient, for_uid))
        for key in sorted(keys):
            if key in seen:
                parent[find(study)] = find(seen[key])
            else:
                seen[key] = study
    if window_seconds > 0:
        timed = sorted((_text(items[0].ds, "PatientID"), t, study) for study, items in by_study.items()
                       if (t := study_time(items[0].ds)) is not None)
        for (p1, t1, s1), (p2, t2, s2) in zip(timed, timed[1:]):
            if p1 == p2 and t2 - t1 <= window_seconds:
                parent[find(s2)] = find(s1)
    groups: dict[str, list[Unit]] = {}
    for study, items in sorted(by_study.items()):
        groups.setdefault(find(study), []).extend(items)
    return list(groups.values())


def _agent(units: list[Unit]) -> tuple[str, str]:
    """Exam agent from the MR series' ContrastBolusAgent[Sequence]."""
    found = Counter()
    names: dict[str, str] = {}
    for u in units:
        if str(u.ds.get("Modality", "")) != "MR":
            continue
        cls = u.features.get("agent_class", "unknown")
        found[cls] += 1
        names.setdefault(cls, u.features.get("agent_text", ""))
    for cls in ("hepatobiliary", "extracellular"):
        if found[cls]:
            return cls, f"ContrastBolusAgent {names[cls]!r}"
    if not found:
        return "n/a", ""
    if found["other"]:
        return "unknown", f"ContrastBolusAgent {names['other']!r} is not a known agent"
    return "unknown", "ContrastBolusAgent missing"


def _family(u: Unit, modality: str) -> bool:
    f = u.features
    if str(u.ds.get("Modality", "")) != modality or not f.get("is_image"):
        return False
    if f.get("orientation") not in ("axial", "unknown"):
        return False
    first = getattr(u, "pass1", None)
    if modality == "CT":
        return first is None or first in CT_PHASE_ROLES
    return first in MR_DYNAMIC_ROLES or (first is None and f.get("mr_sequence") == "t1_gre")


def _run_timeline(units: list[Unit], modality: str) -> list[timeline.Point]:
    members = [u for u in units if _family(u, modality) and u.features.get("acquisition_seconds") is not None]
    times = [u.features["acquisition_seconds"] for u in members]
    if times and max(times) - min(times) > 43200:
        # an exam across midnight: after-midnight times continue the day before
        times = [t + 86400 if t < 43200 else t for t in times]
    points = timeline.cluster([(t, u.series_uid, u) for t, u in zip(times, members)])
    named = [p.time for p in points if any(u.features.get("agent_class") not in ("unknown", "none") for u in p.members)]
    first_named = min(named) if named else None
    for p in points:
        known = {ROLE_PHASE[u.pass1] for u in p.members if u.pass1 in ROLE_PHASE}
        if len(known) == 1:
            p.known = known.pop()
        elif not known:
            classes = {u.features.get("agent_class") for u in p.members}
            # "NONE" in ContrastBolusAgent, or no agent before the acquisitions that name
            # one (a later one without it is more likely a forgotten entry than native)
            before = first_named is not None and p.time < first_named
            if classes == {"none"} or (before and classes <= {"unknown", "none"}):
                p.known = "non_contrast"
        starts = [u.features.get("bolus_start_seconds") for u in p.members]
        p.bolus_start = next((s for s in starts if s is not None), None)
    timeline.solve(points, modality)
    enhanced = [p for p in points if p.phase != "non_contrast"]
    for i, p in enumerate(points):
        gap = round(p.time - points[i - 1].time, 1) if i else None
        rank = enhanced.index(p) + 1 if p in enhanced else None
        if p.basis == "bolus_start":
            how = f"{p.delay:g} s after ContrastBolusStartTime"
        elif p.basis == "order":
            how = (
                f"estimated {p.delay:g} s after injection from the order and spacing of "
                f"{len(points)} acquisition(s) (this one #{i + 1}"
                + (f", {gap:g} s after the previous" if gap is not None else "")
                + ")"
            )
        else:
            how = "no timing"
        if p.note:
            how += f"; {p.note}"
        for u in p.members:
            u.features.update(
                timing_phase=p.phase,
                delay_s=p.delay,
                timing_basis=p.basis,
                contrast_rank=rank,
                contrast_count=len(enhanced),
                gap_prev_s=gap,
            )
            u.timing_note = how
    return points


def _feature_names(cond) -> set[str]:
    if cond.kind == "leaf":
        return {cond.name} if cond.source == "feature" else set()
    return set().union(*(_feature_names(c) for c in cond.children))


def _reason(rule, evidence: list[str], unit: Unit, exam: Exam) -> str:
    origin = "" if rule.origin == "default.toml" else f" from {rule.origin}"
    text = f"{rule.reason or rule.name} (rule {rule.name!r}{origin}, priority {rule.priority}): " + "; ".join(evidence)
    used = _feature_names(rule.when)
    if "image_kind" in used and unit.features.get("image_kind_basis"):
        text += f"; image kind from {unit.features['image_kind_basis']}"
    if ("sequence_match" in used or rule.role == "mr_t1_pre") and unit.features.get("sequence_note"):
        text += f"; sequence: {unit.features['sequence_note']}"
    if "b_value_max" in used or rule.role == "mr_dwi":
        if unit.features.get("b_value_source"):
            text += f"; b-value {unit.features.get('b_value_max'):g} from {unit.features['b_value_source']}"
    ctx = rule.when.context_features
    timed = ctx - {"exam_agent"} or rule.role in ("mr_hepatobiliary", "mr_transitional")
    if timed and getattr(unit, "timing_note", ""):
        text += f"; timing: {unit.timing_note}"
    if "exam_agent" in ctx or rule.role in ("mr_hepatobiliary", "mr_transitional"):
        text += f"; agent: {exam.agent} ({exam.agent_basis})"
    return text


def _unmatched(unit: Unit) -> str:
    ds, f = unit.ds, unit.features
    shown = [
        f"Modality={_text(ds, 'Modality') or '(absent)'}",
        f"SeriesDescription={_text(ds, 'SeriesDescription') or '(absent)'}",
        f"orientation={f.get('orientation')}",
    ]
    if "mr_sequence" in f:
        shown.append(f"mr_sequence={f['mr_sequence']}")
    if "timing_phase" in f:
        shown.append(f"timing_phase={f['timing_phase']}")
    text = "no rule matched: " + ", ".join(shown)
    note = getattr(unit, "timing_note", "")
    return text + (f"; timing: {note}" if note else "")


# --- preferences -----------------------------------------------------------------------
def _band(thickness: float | None) -> int:
    if thickness is None:
        return 0
    if 3.0 <= thickness <= 5.0:
        return 2
    return 1 if thickness < 3.0 else 0


def preference(unit: Unit) -> list[tuple[str, Any, str]]:
    """Criteria, most important first; higher value wins. Documented order:

    1. arterial roles: not called *early* by the description, then called *late*, then
       the later delay (late arterial over early: the papers' input is late arterial);
       delayed/transitional: closest to 3 min; hepatobiliary: closest to 20 min;
    2. slice thickness 3-5 mm over thin (< 3 mm) over thick (> 5 mm);
    3. more coverage (extent of the slice positions, 1 cm steps);
    4. MR: fat-suppressed (ScanOptions/ImageType);
    5. ImageType ORIGINAL over DERIVED;
    6. lower SeriesNumber, then lower phase number, then UID: deterministic, never random.
    """
    ds, f = unit.ds, unit.features
    desc = _text(ds, "SeriesDescription")
    crit: list[tuple[str, Any, str]] = []
    if unit.role in ("ct_arterial", "mr_arterial"):
        crit.append(("not early", not _EARLY_RE.search(desc), "late arterial over early (description)"))
        crit.append(("late", bool(_LATE_ART_RE.search(desc)), "late arterial over early (description)"))
        crit.append(("delay", f.get("delay_s") or 0.0, "late arterial over early (later delay)"))
    if unit.role in _TARGET_DELAY and f.get("delay_s") is not None and f["delay_s"] > 0:
        # closest to the protocol time: 3 min delayed/transitional, 20 min hepatobiliary
        off = -round(abs(math.log(f["delay_s"] / _TARGET_DELAY[unit.role])), 2)
        crit.append(("target delay", off, f"closer to {_TARGET_DELAY[unit.role] / 60:g} min after contrast"))
    thick = f.get("slice_thickness")
    crit.append(("band", _band(thick), "3-5 mm over thin over thick slices"))
    crit.append(("coverage", round((f.get("coverage_mm") or 0.0) / 10.0), "more coverage"))
    if "fat_sat" in f:
        crit.append(("fat_sat", bool(f.get("fat_sat")), "fat-suppressed"))
    itype = [str(v).upper() for v in (ds.get("ImageType") or [])]
    crit.append(("original", bool(itype) and itype[0] == "ORIGINAL", "ORIGINAL over DERIVED"))
    try:
        number = -int(ds.get("SeriesNumber") or 0)
    except (TypeError, ValueError):
        number = 0
    crit.append(("series number", number, "lower SeriesNumber (tie)"))
    crit.append(("phase", -(unit.phase or 0), "lower phase number (tie)"))
    crit.append(("uid", tuple(-ord(c) for c in unit.uid), "lower UID (tie)"))
    return crit


def _describe(unit: Unit, name: str) -> str:
    f = unit.features
    if name in ("band",):
        return f"{f.get('slice_thickness')} mm"
    if name == "coverage":
        return f"{f.get('coverage_mm')} mm coverage"
    if name in ("delay", "target delay"):
        return f"delay {f.get('delay_s')} s"
    if name in ("not early", "late"):
        return repr(_text(unit.ds, "SeriesDescription"))
    if name == "series number":
        return f"SeriesNumber {unit.ds.get('SeriesNumber')}"
    if name == "fat_sat":
        return f"fat_sat={f.get('fat_sat')}"
    if name == "original":
        return f"ImageType={list(unit.ds.get('ImageType') or [])}"
    return unit.uid


def _prefer(exam: Exam) -> None:
    by_role: dict[tuple, list[Unit]] = {}
    for u in exam.units:
        if u.role not in MULTI_ROLES:
            # DWI exported one series per b-value (Canon, some Philips) is one acquisition:
            # series of different b-values complement each other and do not compete
            key = (u.role, u.features.get("b_value_max")) if u.role == "mr_dwi" else (u.role,)
            by_role.setdefault(key, []).append(u)
    for (role, *_), cands in by_role.items():
        if len(cands) < 2:
            continue
        keyed = [(tuple(c[1] for c in preference(u)), u) for u in cands]
        keyed.sort(key=lambda x: x[0], reverse=True)
        winner = keyed[0][1]
        wcrit = preference(winner)
        for _key, loser in keyed[1:]:
            lcrit = preference(loser)
            why = next(
                (w for w, l in zip(wcrit, lcrit) if w[1] != l[1]),
                wcrit[-1],
            )
            loser.reason = (
                f"{role} candidate not chosen: {winner.uid} preferred, {why[2]} "
                f"({_describe(winner, why[0])} vs {_describe(loser, why[0])}); was: {loser.reason}"
            )
            loser.candidate_role = role
            loser.role = "other"


# --- entry points ------------------------------------------------------------------------
def select_exam(units: list[Unit], rules: RuleSet) -> Exam:
    ds = units[0].ds
    exam = Exam(
        study_uids=sorted({u.study_uid for u in units}),
        patient_id=_text(ds, "PatientID"),
        accession_number=_text(ds, "AccessionNumber"),
        units=sorted(units, key=_unit_order),
    )
    exam.agent, exam.agent_basis = _agent(exam.units)
    mark_echo_pairs(exam.units)
    reference = mark_sequence_match(exam.units)
    exam.dynamic_sequence = reference.describe() if reference else ""
    for u in exam.units:
        for name in CONTEXT_FEATURES:
            u.features.pop(name, None)
        u.features["exam_agent"] = exam.agent  # from the headers; timing may infer it below
        m = rules.first_match(u.ds, u.features, skip_context=True)
        u.pass1 = m[0].role if m else None
        u.timing_note = ""
        u.candidate_role = None
    _run_timeline(exam.units, "CT")
    mr_points = _run_timeline(exam.units, "MR")
    late = [p for p in mr_points if p.phase == "hepatobiliary"]
    if late and exam.agent == "unknown":
        exam.agent = "hepatobiliary"
        exam.agent_basis = (
            f"{exam.agent_basis}; inferred from timing: a T1 series {late[0].delay / 60:.0f} min after contrast "
            "only exists with a hepatocyte-specific agent (Gd-EOB-DTPA)"
        )
        exam.notes.append("contrast agent inferred as Gd-EOB-DTPA from timing")
    for u in exam.units:
        u.features["exam_agent"] = exam.agent
    for u in exam.units:
        m = rules.first_match(u.ds, u.features)
        if m is None:
            u.role, u.rule, u.reason = "other", None, _unmatched(u)
        else:
            u.role, u.rule, u.reason = m[0].role, m[0].name, _reason(m[0], m[1], u, exam)
    _prefer(exam)
    return exam


def _unit_order(u: Unit) -> tuple:
    try:
        number = int(u.ds.get("SeriesNumber") or 0)
    except (TypeError, ValueError):
        number = 0
    return (number, u.study_uid, u.series_uid, u.phase or 0)


def select_datasets(datasets: Iterable[Dataset], rules: RuleSet | None = None,
                    window_seconds: float = 0.0) -> list[Exam]:
    """Exams with roles for every unit, from headers (pixel data not needed);
    ``window_seconds``: see :func:`group_exams`."""
    rules = rules or load_rules()
    units = build_units(datasets)
    return [select_exam(group, rules) for group in group_exams(units, window_seconds)]


def select_path(path: Path, rules: RuleSet | None = None) -> list[Exam]:
    """:func:`select_datasets` for every DICOM file under ``path``."""
    return select_datasets([ds for _p, ds in read_headers(Path(path))], rules)
