"""Synthetic DICOM data: nothing real about a patient ever ships with the project.

Public API: ``generate_ct``, ``generate_mr``, ``generate``, ``make_exam``,
``simulate_exam``, ``exam_spec`` (mvi_node.synth.population); roles in
``mvi_node.synth.manifest.ROLES``. Imported lazily so ``plain_series`` stays light.
"""

from __future__ import annotations

from typing import Any

_API = ("generate", "generate_ct", "generate_mr", "make_exam", "simulate_exam", "exam_spec")


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        _gen = importlib.import_module("mvi_node.synth.population")

        return getattr(_gen, name)
    raise AttributeError(name)
