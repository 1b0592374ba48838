"""Population entry points: the CLI, tests and the training pipeline call these.

A population is ``patients`` exams drawn from one seed; each exam's choices come from
``draw_spec`` so exam k is the same whatever the population size, and a single exam
can be produced with every choice pinned (``make_exam``) or kept in memory
(``simulate_exam``) for fast training-data generation.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mvi_node.synth.exam import simulate, write_exam
from mvi_node.synth.manifest import write_manifest
from mvi_node.synth.spec import ExamSpec, draw_spec


def generate(modality: str, out: Path | str, patients: int, seed: int, *, vendor: str = "mixed",
             agent: str | None = None, annotations: str = "seg", matrix: int = 256, thin: bool = False,
             seg_on: str = "mixed", noise: float | None = None, sign_strength: float = 0.7,
             hard_cases: str = "mixed", clean: bool = True, realism: str = "basic",
             **hard_overrides: Any) -> dict[str, Any]:
    """Write a seeded population to ``out``; return the manifest (also in manifest.json).

    ``clean`` removes the dicom/, truth/ and clinical/ folders of a previous run first.
    ``hard_overrides`` pins HardCases switches for every exam (e.g. ``language="zh"``).
    ``realism="varied"`` widens CT anatomy, lesions and noise (:mod:`mvi_node.synth.realism`).
    """
    out = Path(out)
    if clean:
        for sub in ("dicom", "truth", "clinical"):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    studies = []
    for i in range(patients):
        spec = draw_spec(modality, seed, i, vendor=vendor, agent=agent, annotations=annotations,
                         seg_on=seg_on, matrix=matrix, thin=thin, noise=noise, sign_strength=sign_strength,
                         hard_cases=hard_cases, realism=realism, **hard_overrides)
        studies.append(write_exam(spec, out))
    header = {"generator": "mvi_node.synth", "modality": modality.upper(), "seed": seed, "patients": patients,
              "options": {"vendor": vendor, "agent": agent, "annotations": annotations, "matrix": matrix,
                          "thin": thin, "seg_on": seg_on, "noise": noise, "sign_strength": sign_strength,
                          "hard_cases": hard_cases, **hard_overrides,
                          **({"realism": realism} if realism != "basic" else {})}}
    write_manifest(out, header, studies)
    import json

    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def generate_ct(out: Path | str, patients: int, seed: int, **kwargs: Any) -> dict[str, Any]:
    """CT liver population (see ``generate`` for keyword arguments)."""
    kwargs.pop("agent", None)
    return generate("ct", out, patients, seed, **kwargs)


def generate_mr(out: Path | str, patients: int, seed: int, **kwargs: Any) -> dict[str, Any]:
    """MR liver population; ``agent`` = "gd-eob" | "extracellular" | None (seeded mix)."""
    return generate("mr", out, patients, seed, **kwargs)


def exam_spec(modality: str, seed: int = 0, index: int = 0, **choices: Any) -> ExamSpec:
    """Spec of one exam; ``choices`` pin anything (mvi, vendor, agent, matrix, hard-case switches)."""
    return draw_spec(modality, seed, index, **choices)


def make_exam(out: Path | str, modality: str, seed: int = 0, index: int = 0, **choices: Any) -> dict[str, Any]:
    """Write one exam with explicit settings; return its manifest entry (no manifest.json)."""
    return write_exam(exam_spec(modality, seed, index, **choices), Path(out))


def simulate_exam(modality: str, seed: int = 0, index: int = 0, phases: tuple[str, ...] | None = None,
                  **choices: Any):
    """In-memory exam (volumes, truth, lesions, clinical) without DICOM.

    CT at matrix 256: ~0.2 s for all phases, less with ``phases=("arterial",)``. The
    result has ``volumes[phase]`` (HU, slices x rows x cols), ``truth`` (lesion index),
    ``labels`` (tissues), ``grid`` (mm coordinates), ``lesions`` and ``clinical``.
    """
    return simulate(exam_spec(modality, seed, index, **choices), phases)
