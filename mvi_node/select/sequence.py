"""Which 3D T1 gradient-echo sequence is the exam's dynamic series, and who belongs to it.

The T1 pre-contrast input of a dynamic series is the pre-contrast acquisition *of the
same sequence* as the post-contrast phases. The dynamic sequence is the T1 GRE
parameter set (RepetitionTime, EchoTime, FlipAngle, fat suppression, image kind)
acquired at the most distinct times: pre, arterial, portal, transitional... A Dixon
set, a non-fat-suppressed T1 or an in/opposed-phase pair is acquired once.

Each MR unit gets ``features['sequence_match']``:

- ``same``: TR, TE, flip angle, fat suppression and image kind match the dynamic
  (TR within 15 % or 0.5 ms, TE within 15 % or 0.3 ms - far below the 1.15 ms between
  opposed and in phase at 3 T -, flip angle within 3 degrees; a missing value matches
  anything);
- ``flip_angle``: only the flip angle differs (hepatobiliary phases are often acquired
  with a higher flip angle);
- ``different``: TR, TE, fat suppression or image kind differ;
- ``n/a``: not a T1 GRE image, or the exam has no T1 GRE sequence acquired twice;

and ``features['sequence_note']``, the comparison in words for the selection report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from mvi_node.select.mr_headers import NEVER_DYNAMIC

CLUSTER_SECONDS = 5.0


@dataclass
class Reference:
    """The dynamic sequence: parameters of its first member, the units in it."""

    tr: float | None
    te: float | None
    flip: float | None
    fat_sat: bool | None
    kind: str
    acquisitions: int
    members: list[Any] = field(default_factory=list)

    def describe(self) -> str:
        parts = [f"TR {self.tr:g} ms" if self.tr is not None else "TR ?",
                 f"TE {self.te:g} ms" if self.te is not None else "TE ?",
                 f"flip {self.flip:g}°" if self.flip is not None else "flip ?",
                 {True: "fat-suppressed", False: "no fat suppression", None: "fat suppression ?"}[self.fat_sat]]
        if self.kind:
            parts.append(f"{self.kind} maps")
        return ", ".join(parts) + f"; {self.acquisitions} acquisitions"


def _candidate(u) -> bool:
    f = u.features
    return (str(u.ds.get("Modality", "")) == "MR" and bool(f.get("is_image"))
            and f.get("mr_sequence") == "t1_gre" and f.get("orientation") in ("axial", "unknown")
            and f.get("image_kind", "") not in NEVER_DYNAMIC)


def _close(a: float | None, b: float | None, rel: float, absolute: float) -> bool:
    return a is None or b is None or abs(a - b) <= max(absolute, rel * max(abs(a), abs(b)))


def differences(f: dict[str, Any], ref: Reference) -> list[tuple[str, str]]:
    """[(what, text)] where the unit's parameters leave the reference's tolerances."""
    out = []
    if not _close(f.get("repetition_time"), ref.tr, 0.15, 0.5):
        out.append(("tr", f"TR {f['repetition_time']:g} vs {ref.tr:g} ms"))
    if not _close(f.get("echo_time"), ref.te, 0.15, 0.3):
        out.append(("te", f"TE {f['echo_time']:g} vs {ref.te:g} ms"))
    if not _close(f.get("flip_angle"), ref.flip, 0.0, 3.0):
        out.append(("flip", f"flip angle {f['flip_angle']:g} vs {ref.flip:g}°"))
    fs = f.get("fat_sat")
    if fs is not None and ref.fat_sat is not None and fs != ref.fat_sat:
        yn = {True: "yes", False: "no"}
        out.append(("fat_sat", f"fat suppression {yn[fs]} vs {yn[ref.fat_sat]}"))
    kind = f.get("image_kind", "")
    if kind != ref.kind:
        out.append(("kind", f"image kind {kind or 'ordinary'} vs {ref.kind or 'ordinary'}"))
    return out


def _acquisitions(units: list[Any]) -> int:
    times = sorted(u.features["acquisition_seconds"] for u in units if u.features.get("acquisition_seconds") is not None)
    n = sum(1 for i, t in enumerate(times) if i == 0 or t - times[i - 1] > CLUSTER_SECONDS)
    # phases of one series sharing a time (GE multiphase without TriggerTime) still differ
    return max(n, len({(u.series_uid, u.phase) for u in units if u.phase is not None}))


def dynamic_reference(units: Iterable[Any]) -> Reference | None:
    """The T1 GRE parameter set acquired at the most distinct times (>= 2), or None."""
    groups: list[list[Any]] = []
    refs: list[Reference] = []
    for u in sorted((u for u in units if _candidate(u)), key=lambda u: (u.features.get("acquisition_seconds") or 0.0)):
        f = u.features
        for g, ref in zip(groups, refs):
            if not differences(f, ref):
                g.append(u)
                break
        else:
            groups.append([u])
            refs.append(Reference(f.get("repetition_time"), f.get("echo_time"), f.get("flip_angle"),
                                  f.get("fat_sat"), f.get("image_kind", ""), 0))
    best = None
    for g, ref in zip(groups, refs):
        ref.members, ref.acquisitions = g, _acquisitions(g)
        agents = sum(1 for u in g if u.features.get("agent_class") not in ("unknown", "none"))
        score = (ref.acquisitions, agents, bool(ref.fat_sat), len(g))
        if best is None or score > best[0]:
            best = (score, ref)
    if best is None or best[1].acquisitions < 2:
        return None
    return best[1]


def mark_sequence_match(units: list[Any]) -> Reference | None:
    """Set ``sequence_match`` and ``sequence_note`` on every unit; return the reference."""
    ref = dynamic_reference(units)
    for u in units:
        f = u.features
        if ref is None or str(u.ds.get("Modality", "")) != "MR" or f.get("mr_sequence") != "t1_gre":
            f["sequence_match"], f["sequence_note"] = "n/a", ""
            continue
        diff = differences(f, ref)
        if not diff:
            f["sequence_match"] = "same"
            f["sequence_note"] = f"same sequence as the dynamic phases ({ref.describe()})"
        else:
            f["sequence_match"] = "flip_angle" if [d for d, _ in diff] == ["flip"] else "different"
            f["sequence_note"] = (f"not the dynamic phases' sequence: {'; '.join(t for _, t in diff)} "
                                  f"(dynamic: {ref.describe()})")
    return ref
