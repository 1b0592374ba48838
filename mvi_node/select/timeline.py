"""Contrast timing of an exam's acquisitions: delay after injection and phase.

Two bases, in this order:

1. ``bolus_start``: ContrastBolusStartTime (0018,1042) is in the headers; the delay of
   an acquisition is its AcquisitionTime minus that start (the exam's most common
   start is used for series that lack it).
2. ``order``: no start time. The injection time is estimated as the one that fits the
   order and spacing of the exam's acquisitions best to the usual liver protocol
   (late arterial ~35 s, portal venous ~70 s, delayed ~3 min, hepatobiliary ~20 min),
   respecting what descriptions already said. When two different readings fit about
   equally well, the acquisitions they disagree on stay ``unknown``: never a guess.

Windows (seconds after injection start; CT bolus tracking puts the late arterial scan
at 35-45 s, the papers' MR phases at 20-30 / 55-70 s / 3 min / 20 min):
``non_contrast`` < 8; ``arterial`` 8-50; ``portal_venous`` 50-110; ``delayed`` >= 110
(MR: 110-600, then ``hepatobiliary`` >= 600).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

# (phase, start, centre, scale, log-scaled cost)
_WINDOWS = {
    "CT": [
        ("arterial", 8, 38, 12, False),
        ("portal_venous", 50, 70, 15, False),
        ("delayed", 110, 180, 1.0, True),
    ],
    "MR": [
        ("arterial", 8, 30, 15, False),
        ("portal_venous", 50, 70, 15, False),
        ("delayed", 110, 180, 1.0, True),
        ("hepatobiliary", 600, 1200, 1.0, True),
    ],
}
# At most this many distinct acquisitions per phase (early + late arterial).
# MR multi-arterial acquisitions (DISCO, TWIST-VIBE) give up to six arterial phases.
_MAX_PER_PHASE = {
    "CT": {"non_contrast": 1, "arterial": 2, "portal_venous": 1, "delayed": 1, "hepatobiliary": 2},
    "MR": {"non_contrast": 1, "arterial": 6, "portal_venous": 1, "delayed": 1, "hepatobiliary": 2},
}
# A non-contrast scan precedes the first enhanced one by at least this (s): CT bolus
# tracking needs monitoring scans; MR needs the injection after the pre scan.
_NC_GAP = {"CT": 45.0, "MR": 25.0}
# Prior cost of calling an acquisition non-contrast: MR liver protocols almost always
# have a pre-contrast T1, CT ones often skip the native scan.
_NC_COST = {"CT": 0.5, "MR": 0.2}
_KNOWN_MISMATCH = 3.0  # a description/agent saying otherwise costs this much
_AMBIGUOUS = 0.25  # readings closer than this are a tie
NON_CONTRAST_MAX = 8.0
CLUSTER_SECONDS = 5.0


@dataclass
class Point:
    """One acquisition time (several series may share it: reconstructions)."""

    time: float
    series: set[str] = field(default_factory=set)
    members: list[object] = field(default_factory=list)
    known: str | None = None  # phase stated by description/agent
    bolus_start: float | None = None
    phase: str = "unknown"
    delay: float | None = None
    basis: str = "none"
    note: str = ""


def _diff(later: float, earlier: float) -> float:
    """Seconds from ``earlier`` to ``later`` on a 24 h clock (an exam may cross midnight)."""
    return (later - earlier + 43200) % 86400 - 43200


def phase_of(delay: float, modality: str) -> str:
    if delay < NON_CONTRAST_MAX:
        return "non_contrast"
    phase = "unknown"
    for name, start, *_ in _WINDOWS[modality]:
        if delay >= start:
            phase = name
    return phase


def _cost(delay: float, modality: str) -> tuple[str, float]:
    phase = phase_of(delay, modality)
    if phase == "non_contrast":
        return phase, _NC_COST[modality]
    for name, _start, centre, scale, logscale in _WINDOWS[modality]:
        if name == phase:
            if logscale:
                return phase, abs(math.log(max(delay, 1.0) / centre)) / math.log(2) * scale
            return phase, abs(delay - centre) / scale
    return phase, 99.0


def cluster(items: list[tuple[float, str, object]]) -> list[Point]:
    """Group (time, series uid, member) into points: same acquisition within 5 s.

    Two phases of one series are never merged (their series uid is the same).
    """
    points: list[Point] = []
    for t, series, member in sorted(items, key=lambda x: x[0]):
        last = points[-1] if points else None
        if last is not None and t - last.time <= CLUSTER_SECONDS and series not in last.series:
            last.series.add(series)
            last.members.append(member)
        else:
            points.append(Point(t, {series}, [member]))
    return points


def _assign(points: list[Point], injection: float, modality: str) -> tuple[float, list[str]] | None:
    phases, total = [], 0.0
    for p in points:
        phase, cost = _cost(p.time - injection, modality)
        if p.known and p.known != phase:
            cost += _KNOWN_MISMATCH
        phases.append(phase)
        total += cost
    counts = Counter(phases)
    if any(n > _MAX_PER_PHASE[modality].get(ph, 99) for ph, n in counts.items()):
        return None
    if counts["non_contrast"] == len(points) and len(points) > 1:
        return None
    enhanced = [p.time for p, ph in zip(points, phases) if ph != "non_contrast"]
    nc = [p.time for p, ph in zip(points, phases) if ph == "non_contrast"]
    if nc and enhanced and min(enhanced) - max(nc) < _NC_GAP[modality]:
        return None
    if nc and enhanced and max(nc) > min(enhanced):
        return None
    return total, phases


def solve(points: list[Point], modality: str) -> None:
    """Give every point a phase, a delay and the basis it was decided on.

    ContrastBolusStartTime is used unless it contradicts what descriptions/agent tags
    say while the order and spacing agree with them (some consoles store the start of
    the bolus-tracking scan, not of the injection): then the order wins, with a note.
    """
    if not points:
        return
    starts = [p.bolus_start for p in points if p.bolus_start is not None]
    if starts:
        common = Counter(starts).most_common(1)[0][0]
        delays = [_diff(p.time, p.bolus_start if p.bolus_start is not None else common) for p in points]
        # a start after every acquisition is a clock or entry error: do not trust it
        if any(d >= NON_CONTRAST_MAX for d in delays):
            phases = [phase_of(d, modality) for d in delays]
            conflicts = sum(1 for p, ph in zip(points, phases) if p.known and p.known != ph)
            if not conflicts or not _solve_by_order(points, modality, max_conflicts=conflicts - 1):
                for p, d, ph in zip(points, delays, phases):
                    p.delay, p.basis, p.phase, p.note = round(d, 1), "bolus_start", ph, ""
                return
            for p in points:
                p.note = (p.note + "; " if p.note else "") + (
                    "ContrastBolusStartTime contradicts the descriptions; order and spacing used"
                )
            return
    _solve_by_order(points, modality)


def _solve_by_order(points: list[Point], modality: str, max_conflicts: int | None = None) -> bool:
    """Estimate the injection time; False (points untouched) when no reading fits or
    the best one contradicts more than ``max_conflicts`` stated phases."""
    candidates = set()
    centres = [0.0, 22.0] + [c for _n, _s, c, *_ in _WINDOWS[modality]]
    for p in points:
        for c in centres:
            candidates.add(round(p.time - c, 1))
    scored = []
    for inj in sorted(candidates):
        result = _assign(points, inj, modality)
        if result is not None:
            scored.append((result[0], inj, result[1]))
    if not scored:
        if max_conflicts is None:
            for p in points:
                p.note = "order and spacing fit no liver protocol"
        return False
    scored.sort(key=lambda s: (s[0], s[1]))
    best_cost, best_inj, best = scored[0]
    if max_conflicts is not None:
        if sum(1 for p, ph in zip(points, best) if p.known and p.known != ph) > max_conflicts:
            return False
    rivals = [s for s in scored[1:] if s[0] - best_cost < _AMBIGUOUS and s[2] != best]
    for i, p in enumerate(points):
        p.delay, p.basis = round(p.time - best_inj, 1), "order"
        disagree = [r for r in rivals if r[2][i] != best[i]]
        if disagree:
            p.phase = "unknown"
            p.note = f"timing ambiguous: {best[i]} or {disagree[0][2][i]} fit the order and spacing equally well"
        else:
            p.phase = best[i]
    return True
