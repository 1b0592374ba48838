"""What one synthetic exam will contain, drawn from a seed or set by hand.

Everything random about an exam (MVI status, vendor, hard cases, clinical factors) is
decided here, up front and from its own RNG stream, so rendering stays a pure function
of the spec and two runs with one seed write the same bytes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

VENDORS: tuple[str, ...] = ("ge", "siemens", "philips", "canon")
AGENTS: tuple[str, ...] = ("gd-eob", "extracellular")
LANGUAGES: tuple[str, ...] = ("en", "de", "es", "zh")
HARD_CASE_NAMES: tuple[str, ...] = (
    "opaque_descriptions",
    "missing_agent",
    "split_studies",
    "reformats",
    "early_arterial",
    "multiphase_series",
    "dixon",
    "subtraction",
    "enhanced_multiframe",
)

# Probability of each hard case in a seeded population ("mixed").
HARD_CASE_RATES: dict[str, float] = {
    "opaque_descriptions": 0.15,
    "missing_agent": 0.15,
    "split_studies": 0.15,
    "reformats": 0.3,
    "early_arterial": 0.2,
    "multiphase_series": 0.3,  # MR only
}
# MR traps (a Dixon set before the fat-sat pre, subtraction series), drawn from their own
# stream so that every draw a seed made before they existed stays what it was.
MR_TRAP_RATES: dict[str, float] = {"dixon": 0.25, "subtraction": 0.2}
LANGUAGE_RATES: dict[str, float] = {"en": 0.6, "de": 0.14, "es": 0.13, "zh": 0.13}
SEG_ON_PORTAL_RATE = 0.2
MVI_PREVALENCE = 0.4


@dataclass(frozen=True)
class HardCases:
    """Switches for the header situations a phase selector must survive."""

    language: str = "en"
    opaque_descriptions: bool = False
    missing_agent: bool = False
    split_studies: bool = False
    reformats: bool = False
    early_arterial: bool = False
    multiphase_series: bool = False
    #: MR: a 3D T1 Dixon set (water/fat/opposed/in phase) before the fat-sat pre series
    dixon: bool = False
    #: MR: arterial and portal minus pre subtraction series
    subtraction: bool = False
    #: each CT/MR image series as one Enhanced multi-frame instance (mvi_node.synth.enhanced);
    #: never drawn (not in HARD_CASE_RATES, not in "all"): only set by hand
    enhanced_multiframe: bool = False

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if not self.enhanced_multiframe:  # off: manifests stay as they were before the switch
            del out["enhanced_multiframe"]
        for name in ("dixon", "subtraction"):  # off: manifests stay as they were before the switches
            if not out[name]:
                del out[name]
        return out


@dataclass(frozen=True)
class ExamSpec:
    """All choices for one exam; ``render`` functions depend on nothing else."""

    modality: str  # "ct" | "mr"
    seed: int
    index: int
    mvi: bool
    grade: str  # M0 | M1 | M2
    vendor: str
    agent: str | None = None  # MR: gd-eob | extracellular
    hard: HardCases = field(default_factory=HardCases)
    annotations: str = "seg"  # seg | circle | sr | none
    seg_on: str = "arterial"  # arterial | portal
    matrix: int = 256
    thin: bool = False
    noise: float | None = None  # CT: HU sd at 5 mm; MR: fraction of liver signal
    sign_strength: float = 0.7
    field_strength: float = 1.5
    #: "basic" (the phantoms as always) or "varied" (mvi_node.synth.realism: organ shape,
    #: vessels, lesion shape/enhancement, noise); CT only
    realism: str = "basic"

    @property
    def patient_id(self) -> str:
        return f"SYNTH{self.modality.upper()}{self.seed % 10000:04d}P{self.index + 1:04d}"

    @property
    def patient_name(self) -> str:
        return f"SYNTH^{self.modality.upper()}{self.seed % 10000:04d}P{self.index + 1:04d}"

    @property
    def accession(self) -> str:
        return f"A{self.modality.upper()}{self.seed % 100000:05d}{self.index + 1:04d}"

    def key(self) -> str:
        """String every UID and RNG stream of the exam derives from."""
        return f"mvi-synth|{self.modality}|{self.seed}|{self.index}"


def exam_rng(spec: ExamSpec, stream: str) -> np.random.Generator:
    """Independent, reproducible RNG stream ``stream`` of one exam."""
    code = [ord(c) for c in f"{spec.modality}:{stream}"]
    return np.random.default_rng([spec.seed & 0xFFFFFFFF, spec.index, *code])


def draw_spec(
    modality: str,
    seed: int,
    index: int,
    *,
    vendor: str = "mixed",
    agent: str | None = None,
    annotations: str = "seg",
    seg_on: str = "mixed",
    matrix: int = 256,
    thin: bool = False,
    noise: float | None = None,
    sign_strength: float = 0.7,
    hard_cases: str = "mixed",
    mvi: bool | None = None,
    realism: str = "basic",
    **hard_overrides: Any,
) -> ExamSpec:
    """Draw exam ``index`` of a seeded population; keyword arguments pin choices.

    ``hard_cases``: "mixed" (seeded rates), "none" (plain English exams) or "all"
    (every switch on). ``hard_overrides`` sets single HardCases fields.
    """
    if modality not in ("ct", "mr"):
        raise ValueError(f"modality must be ct or mr, not {modality!r}")
    if realism not in ("basic", "varied"):
        raise ValueError(f"realism must be basic or varied, not {realism!r}")
    rng = np.random.default_rng([seed & 0xFFFFFFFF, index, 7919 if modality == "ct" else 104729])
    is_mvi = bool(rng.random() < MVI_PREVALENCE)
    grade_draw = rng.random()
    if mvi is not None:
        is_mvi = bool(mvi)
    grade = ("M2" if grade_draw < 0.35 else "M1") if is_mvi else "M0"
    vendor_draw = VENDORS[int(rng.integers(len(VENDORS)))]
    if vendor not in ("mixed", *VENDORS):
        raise ValueError(f"unknown vendor {vendor!r}")
    chosen_vendor = vendor_draw if vendor == "mixed" else vendor
    agent_draw = "gd-eob" if rng.random() < 0.65 else "extracellular"
    chosen_agent = None
    if modality == "mr":
        chosen_agent = agent or agent_draw
        if chosen_agent not in AGENTS:
            raise ValueError(f"unknown agent {chosen_agent!r}")
    lang_draw = rng.choice(list(LANGUAGE_RATES), p=list(LANGUAGE_RATES.values()))
    flags = {name: bool(rng.random() < rate) for name, rate in HARD_CASE_RATES.items()}
    seg_draw = "portal" if rng.random() < SEG_ON_PORTAL_RATE else "arterial"
    field_strength = 3.0 if rng.random() < 0.5 else 1.5
    trap_rng = np.random.default_rng([seed & 0xFFFFFFFF, index, 15485863])
    flags.update({name: bool(trap_rng.random() < rate) for name, rate in MR_TRAP_RATES.items()})
    if hard_cases == "none":
        flags = {k: False for k in flags}
        lang_draw = "en"
        seg_draw = "arterial"
    elif hard_cases == "all":
        flags = {k: True for k in flags}
    elif hard_cases != "mixed":
        raise ValueError(f"hard_cases must be mixed|none|all, not {hard_cases!r}")
    if modality == "ct":
        flags["multiphase_series"] = False
        flags.update(dixon=False, subtraction=False)
    language = str(hard_overrides.pop("language", lang_draw))
    flags.update({k: bool(v) for k, v in hard_overrides.items() if k in HARD_CASE_NAMES})
    unknown = set(hard_overrides) - set(HARD_CASE_NAMES)
    if unknown:
        raise ValueError(f"unknown hard-case switches: {sorted(unknown)}")
    return ExamSpec(
        modality=modality,
        seed=seed,
        index=index,
        mvi=is_mvi,
        grade=grade,
        vendor=chosen_vendor,
        agent=chosen_agent,
        hard=HardCases(language=language, **flags),
        annotations=annotations,
        seg_on=seg_draw if seg_on == "mixed" else seg_on,
        matrix=matrix,
        thin=thin,
        noise=noise,
        sign_strength=float(np.clip(sign_strength, 0.0, 1.0)),
        field_strength=field_strength,
        realism=realism,
    )


def with_changes(spec: ExamSpec, **changes: Any) -> ExamSpec:
    """Copy of ``spec`` with fields (or HardCases fields) replaced."""
    hard = {k: changes.pop(k) for k in list(changes) if k in HARD_CASE_NAMES or k == "language"}
    if hard:
        changes["hard"] = replace(spec.hard, **hard)
    return replace(spec, **changes)
