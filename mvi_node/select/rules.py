"""The rule language: TOML rules, their conditions and operators, site overrides.

A rule file holds ``[[rule]]`` tables::

    [[rule]]
    name = "ct-arterial-description"     # unique; a site file overrides by name
    role = "ct_arterial"                 # one of ROLES
    priority = 600                       # higher is tried first; first match wins
    reason = "description names the arterial phase"   # optional
    enabled = true                       # a site file sets false to drop a rule
    when.all = [
      { tag = "Modality", in = ["CT"] },
      { tag = "SeriesDescription", regex = 'arteri|動脈|动脉' },
    ]

A condition is a leaf or a combination: ``{ all = [...] }``, ``{ any = [...] }``,
``{ not = {...} }`` (nested freely). A leaf names its value with ``tag`` (a DICOM
keyword, a ``GGGG,EEEE`` tag, or a dotted path through sequences such as
``ContrastBolusAgentSequence.CodeMeaning``) or ``feature`` (a value computed by the
engine, see :data:`FEATURES`), and tests it with one or more operators, all of which
must hold:

- ``regex``: case-insensitive Unicode search (NFKC-normalised, so full-width letters
  match); a multi-valued attribute (ImageType) matches when any value does;
- ``min`` / ``max``: numeric range, inclusive;
- ``in`` / ``not_in``: set membership (strings compared case-insensitively);
- ``present``: true when the value exists and is not empty, false for absence.

A missing value satisfies only ``present = false`` and ``not_in``.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag

ROLES = (
    "ct_non_contrast",
    "ct_arterial",
    "ct_portal_venous",
    "ct_delayed",
    "mr_t1_pre",
    "mr_arterial",
    "mr_portal_venous",
    "mr_transitional",
    "mr_hepatobiliary",
    "mr_t2",
    "mr_dwi",
    "mr_adc",
    "seg",
    "annotation",
    "other",
)

#: Values the engine computes. Those in CONTEXT_FEATURES depend on the other series of
#: the exam and are unknown in the engine's first pass (see engine.py), except
#: exam_agent, which the first pass knows from the headers (timing may refine it).
FEATURES = {
    "sop_class": "SOP class name (from SOPClassUID), e.g. 'Segmentation Storage'",
    "is_image": "true for image SOP classes",
    "instances": "number of images in the unit (instances; each frame of an Enhanced multi-frame instance)",
    "frames": "number of frames (NumberOfFrames summed; an Enhanced instance counts as its frames)",
    "distinct_positions": "distinct ImagePositionPatient values",
    "orientation": "axial / coronal / sagittal / oblique / unknown (ImageOrientationPatient)",
    "slice_thickness": "SliceThickness, mm",
    "coverage_mm": "extent of the slice positions plus one thickness, mm",
    "agent_class": "hepatobiliary / extracellular / none / other / unknown (ContrastBolusAgent[Sequence])",
    "mr_sequence": "t1_gre / t1_2d / t2 / dwi / adc / unknown from TR, TE, ScanningSequence, b-value",
    "fat_sat": "fat suppression from ScanOptions/ImageType",
    "b_value_max": "largest b-value (DiffusionBValue; GE, Siemens, Philips private elements under their creators; "
    "Canon ImageComments; Siemens SequenceName)",
    "image_kind": "water / fat / in_phase / opposed_phase / in_opposed / fat_fraction / subtraction / '' "
    "(ImageType, EchoTime pairs, description; mr_headers.py)",
    "sequence_match": "same / flip_angle / different / n/a: is this the dynamic series' T1 GRE sequence (sequence.py)",
    "repetition_time": "RepetitionTime, ms",
    "echo_time": "EchoTime, ms",
    "flip_angle": "FlipAngle, degrees",
    "sr_roi": "true for an SR holding image coordinates (SCOORD/SCOORD3D content items)",
    "exam_agent": "agent of the exam: hepatobiliary / extracellular / unknown",
    "delay_s": "seconds after contrast start (time minus ContrastBolusStartTime, or estimated)",
    "timing_phase": "non_contrast / early_arterial / arterial / portal_venous / delayed / hepatobiliary / unknown",
    "timing_basis": "bolus_start (ContrastBolusStartTime) / order (spacing of the contrast series) / none",
    "contrast_rank": "1-based rank of this acquisition among the exam's contrast-enhanced ones",
    "contrast_count": "number of contrast-enhanced acquisitions of the exam (same family)",
    "gap_prev_s": "seconds since the previous acquisition of the same family",
}
CONTEXT_FEATURES = frozenset(
    {"exam_agent", "delay_s", "timing_phase", "timing_basis", "contrast_rank", "contrast_count", "gap_prev_s"}
)

_LEAF_OPS = ("regex", "min", "max", "in", "not_in", "present")
_HEX_TAG = re.compile(r"^\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?$")


class _Members(frozenset):
    """A set of normalised values that remembers how the rule wrote them."""

    shown: tuple[str, ...] = ()


class RuleError(ValueError):
    """A rule file is invalid; the message names the file, rule and key."""


def norm(text: Any) -> str:
    """NFKC + casefold: what regexes and sets compare (full-width, accents kept)."""
    return unicodedata.normalize("NFKC", str(text)).strip()


def _flatten(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        out = []
        for v in value:
            out.extend(_flatten(v))
        return out
    if isinstance(value, str) and not value.strip():
        return []
    return [value]


def _tag_of(component: str):
    m = _HEX_TAG.match(component)
    if m:
        return Tag(int(m.group(1), 16), int(m.group(2), 16))
    tag = tag_for_keyword(component)
    if tag is None:
        raise KeyError(component)
    return Tag(tag)


def dicom_values(ds: Dataset, path: str) -> list[Any]:
    """Values of a keyword or a dotted sequence path; every item of a sequence is searched."""
    current: list[Any] = [ds]
    for component in path.split("."):
        tag = _tag_of(component)
        nxt: list[Any] = []
        for item in current:
            if not isinstance(item, Dataset) or tag not in item:
                continue
            value = item[tag].value
            if isinstance(value, Sequence):
                nxt.extend(value)
            else:
                nxt.append(value)
        current = nxt
    return [v for v in _flatten(current) if not isinstance(v, Dataset)]


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _set_key(v: Any) -> Any:
    if isinstance(v, bool):
        return v
    n = _num(v)
    return n if n is not None else norm(v).casefold()


def _show(values: list[Any]) -> str:
    text = "\\".join(str(v) for v in values) if values else "(absent)"
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class Condition:
    """A compiled condition; :meth:`test` returns (matched, evidence)."""

    kind: str  # "all" | "any" | "not" | "leaf"
    children: tuple["Condition", ...] = ()
    source: str = ""  # "tag" | "feature"
    name: str = ""
    ops: tuple[tuple[str, Any], ...] = ()

    @property
    def context_features(self) -> set[str]:
        if self.kind == "leaf":
            return {self.name} & CONTEXT_FEATURES if self.source == "feature" else set()
        return set().union(*(c.context_features for c in self.children)) if self.children else set()

    def test(self, ds: Dataset, features: dict[str, Any], skip_context: bool = False) -> tuple[bool, list[str]]:
        if self.kind == "all":
            evidence: list[str] = []
            for c in self.children:
                ok, ev = c.test(ds, features, skip_context)
                if not ok:
                    return False, []
                evidence += ev
            return True, evidence
        if self.kind == "any":
            for c in self.children:
                ok, ev = c.test(ds, features, skip_context)
                if ok:
                    return True, ev
            return False, []
        if self.kind == "not":
            ok, _ = self.children[0].test(ds, features, skip_context)
            if skip_context and self.children[0].context_features - set(features):
                return False, []  # unknown yet: neither it nor its negation holds
            return (not ok), ([f"not({self.children[0].describe()})"] if not ok else [])
        if skip_context and self.source == "feature" and self.name in CONTEXT_FEATURES and self.name not in features:
            return False, []  # not computed yet (first pass)
        values = self._values(ds, features)
        for op, arg in self.ops:
            if not _apply(op, arg, values):
                return False, []
        return True, [f"{self.name}={_show(values)} ({self.describe_ops()})"]

    def _values(self, ds: Dataset, features: dict[str, Any]) -> list[Any]:
        if self.source == "feature":
            return _flatten(features.get(self.name))
        try:
            return dicom_values(ds, self.name)
        except KeyError:
            return []

    def describe_ops(self) -> str:
        parts = []
        for op, arg in self.ops:
            if op == "regex":
                pattern = arg.pattern if len(arg.pattern) <= 60 else arg.pattern[:57] + "..."
                parts.append(f"~ /{pattern}/")
            elif op == "min":
                parts.append(f">= {arg:g}")
            elif op == "max":
                parts.append(f"<= {arg:g}")
            elif op in ("in", "not_in"):
                parts.append(f"{op.replace('_', ' ')} {list(arg.shown)}")
            else:
                parts.append("present" if arg else "absent")
        return ", ".join(parts)

    def describe(self) -> str:
        if self.kind == "leaf":
            return f"{self.name} {self.describe_ops()}"
        return f"{self.kind}(" + "; ".join(c.describe() for c in self.children) + ")"


def _apply(op: str, arg: Any, values: list[Any]) -> bool:
    if op == "present":
        return bool(values) == arg
    if op == "not_in":
        return not any(_set_key(v) in arg for v in values)
    if not values:
        return False
    if op == "regex":
        return any(arg.search(norm(v)) for v in values)
    if op == "in":
        return any(_set_key(v) in arg for v in values)
    nums = [n for n in (_num(v) for v in values) if n is not None]
    if op == "min":
        return any(n >= arg for n in nums)
    if op == "max":
        return any(n <= arg for n in nums)
    raise AssertionError(op)


def compile_condition(spec: Any, where: str) -> Condition:
    """Validate and compile a condition table; errors name ``where``."""
    if not isinstance(spec, dict) or not spec:
        raise RuleError(f"{where}: a condition is a non-empty table")
    combos = [k for k in ("all", "any", "not") if k in spec]
    if combos:
        if len(spec) != 1:
            raise RuleError(f"{where}: '{combos[0]}' must be alone in its table, found {sorted(spec)}")
        key = combos[0]
        body = spec[key]
        if key == "not":
            return Condition("not", (compile_condition(body, f"{where}.not"),))
        if not isinstance(body, list) or not body:
            raise RuleError(f"{where}.{key}: a non-empty list of conditions")
        return Condition(key, tuple(compile_condition(c, f"{where}.{key}[{i}]") for i, c in enumerate(body)))
    sources = [k for k in ("tag", "feature") if k in spec]
    if len(sources) != 1:
        raise RuleError(f"{where}: a leaf names exactly one of 'tag' or 'feature'")
    source = sources[0]
    name = spec[source]
    if source == "tag":
        for comp in str(name).split("."):
            try:
                _tag_of(comp)
            except KeyError:
                raise RuleError(f"{where}: unknown DICOM keyword {comp!r}") from None
    elif name not in FEATURES:
        raise RuleError(f"{where}: unknown feature {name!r}; known: {', '.join(sorted(FEATURES))}")
    unknown = set(spec) - {source, *_LEAF_OPS}
    if unknown:
        raise RuleError(f"{where}: unknown key(s) {sorted(unknown)}; operators are {', '.join(_LEAF_OPS)}")
    ops: list[tuple[str, Any]] = []
    for op in _LEAF_OPS:
        if op not in spec:
            continue
        arg = spec[op]
        if op == "regex":
            try:
                arg = re.compile(norm(arg), re.IGNORECASE | re.UNICODE)
            except re.error as exc:
                raise RuleError(f"{where}: bad regex {spec[op]!r}: {exc}") from None
        elif op in ("min", "max"):
            if _num(arg) is None:
                raise RuleError(f"{where}: {op} must be a number")
            arg = float(arg)
        elif op in ("in", "not_in"):
            if not isinstance(arg, list):
                raise RuleError(f"{where}: {op} must be a list")
            arg = _Members(_set_key(v) for v in arg)
            arg.shown = tuple(map(str, spec[op]))
        elif not isinstance(arg, bool):
            raise RuleError(f"{where}: present must be true or false")
        ops.append((op, arg))
    if not ops:
        raise RuleError(f"{where}: no operator; use one of {', '.join(_LEAF_OPS)}")
    return Condition("leaf", source=source, name=str(name), ops=tuple(ops))


@dataclass(frozen=True)
class Rule:
    name: str
    role: str
    priority: int
    when: Condition
    reason: str = ""
    enabled: bool = True
    origin: str = ""  # file the rule (or its last override) came from
    order: int = 0

    def match(self, ds: Dataset, features: dict[str, Any], skip_context: bool = False) -> list[str] | None:
        ok, evidence = self.when.test(ds, features, skip_context)
        return evidence if ok else None


@dataclass
class RuleSet:
    rules: list[Rule] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def active(self) -> list[Rule]:
        """Enabled rules, highest priority first; ties keep file order."""
        return sorted((r for r in self.rules if r.enabled), key=lambda r: (-r.priority, r.order))

    def first_match(
        self, ds: Dataset, features: dict[str, Any], skip_context: bool = False, only: Callable[[Rule], bool] | None = None
    ) -> tuple[Rule, list[str]] | None:
        for rule in self.active():
            if only is not None and not only(rule):
                continue
            evidence = rule.match(ds, features, skip_context)
            if evidence is not None:
                return rule, evidence
        return None

    def merge(self, data: dict[str, Any], origin: str) -> None:
        """Add, override (by name: only the keys given) or disable rules."""
        unknown = set(data) - {"rule", "disable"}
        if unknown:
            raise RuleError(f"{origin}: unknown top-level key(s) {sorted(unknown)}; use [[rule]] and disable = [...]")
        by_name = {r.name: i for i, r in enumerate(self.rules)}
        for name in data.get("disable", []):
            if name not in by_name:
                raise RuleError(f"{origin}: disable names unknown rule {name!r}")
            self.rules[by_name[name]] = replace(self.rules[by_name[name]], enabled=False, origin=origin)
        for i, spec in enumerate(data.get("rule", [])):
            where = f"{origin}: rule[{i}]"
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
                raise RuleError(f"{where}: every rule needs a name")
            name = spec["name"]
            where = f"{origin}: rule {name!r}"
            bad = set(spec) - {"name", "role", "priority", "when", "reason", "enabled"}
            if bad:
                raise RuleError(f"{where}: unknown key(s) {sorted(bad)}")
            if "role" in spec and spec["role"] not in ROLES:
                raise RuleError(f"{where}: role {spec['role']!r} is not one of {', '.join(ROLES)}")
            if "priority" in spec and (not isinstance(spec["priority"], int) or isinstance(spec["priority"], bool)):
                raise RuleError(f"{where}: priority must be an integer")
            when = compile_condition(spec["when"], f"{where}.when") if "when" in spec else None
            if name in by_name:
                old = self.rules[by_name[name]]
                self.rules[by_name[name]] = replace(
                    old,
                    role=spec.get("role", old.role),
                    priority=spec.get("priority", old.priority),
                    when=when or old.when,
                    reason=spec.get("reason", old.reason),
                    enabled=bool(spec.get("enabled", True)),
                    origin=origin,
                )
                continue
            if "role" not in spec or when is None:
                raise RuleError(f"{where}: a new rule needs role and when")
            self.rules.append(
                Rule(
                    name=name,
                    role=spec["role"],
                    priority=spec.get("priority", 0),
                    when=when,
                    reason=spec.get("reason", ""),
                    enabled=bool(spec.get("enabled", True)),
                    origin=origin,
                    order=len(self.rules),
                )
            )
            by_name[name] = len(self.rules) - 1
        self.sources.append(origin)


def _parse(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"{origin}: {exc}") from None


def load_rules(site_file: str | Path | None = None, shipped: bool = True) -> RuleSet:
    """The shipped default rules, then the site file's additions/overrides/disables."""
    rules = RuleSet()
    if shipped:
        text = resources.files("mvi_node.select").joinpath("rules/default.toml").read_text(encoding="utf-8")
        rules.merge(_parse(text, "default.toml"), "default.toml")
    if site_file:
        path = Path(site_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RuleError(f"{path}: {exc}") from None
        rules.merge(_parse(text, str(path)), str(path))
    return rules
