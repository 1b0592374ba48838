"""Patient-level splits: no patient has exams on two sides; seeded; a ``split`` column wins.

1. Examples are grouped by patient (``TrainingExample.group``, a hash).
2. A group in which a row names its split goes there whole; two rows of one patient
   naming different splits is a :class:`~mvi_node.cohort.table.CohortError`.
3. The other groups are stratified by label (the group's first labelled example) and,
   per stratum, ordered by their hash and permuted with ``numpy.random.default_rng(seed)``:
   the same cohort and seed give the same split whatever the row order. Of a stratum of
   ``n`` groups, ``round(n * test)`` go to test (at least one when ``test`` > 0 and
   ``n`` >= 3) and ``round(n * validation)`` to validation (at least one when
   ``validation`` > 0 and ``n`` >= 2); the rest train.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Iterable

import numpy as np

from mvi_node.cohort.table import SPLIT, CohortError
from mvi_node.infer.recipe import SPLITS, TrainingExample


def _groups(examples: list[TrainingExample]) -> dict[str, list[TrainingExample]]:
    groups: dict[str, list[TrainingExample]] = {}
    for e in examples:
        groups.setdefault(e.group, []).append(e)
    return groups


def _given(members: list[TrainingExample]) -> str:
    named = [e for e in members if e.split]
    for e in named[1:]:
        if e.split != named[0].split:
            raise CohortError(e.row, SPLIT, f"{e.split!r}, but the same patient's row {named[0].row} is in "
                                            f"{named[0].split!r}: one patient's exams stay in one split")
    return named[0].split if named else ""


def _stratum(members: list[TrainingExample], label: str) -> str:
    for e in members:
        if e.labels.get(label) is not None:
            return str(e.labels[label])
    return ""


def assign_splits(examples: Iterable[TrainingExample], *, seed: int = 0, validation: float = 0.2,
                  test: float = 0.0, label: str = "") -> list[TrainingExample]:
    """``examples`` (same order) with every ``split`` set; see the module doc."""
    examples = list(examples)
    if not 0 <= validation < 1 or not 0 <= test < 1 or validation + test >= 1:
        raise ValueError(f"split fractions validation={validation}, test={test}: each in [0, 1), sum < 1")
    unknown = [e for e in examples if e.split and e.split not in SPLITS]
    if unknown:
        raise CohortError(unknown[0].row, SPLIT, f"unknown split {unknown[0].split!r}")
    chosen: dict[str, str] = {}
    strata: dict[str, list[str]] = {}
    for group, members in _groups(examples).items():
        given = _given(members)
        if given:
            chosen[group] = given
        else:
            strata.setdefault(_stratum(members, label), []).append(group)
    rng = np.random.default_rng(seed)
    for key in sorted(strata):
        groups = sorted(strata[key])
        n = len(groups)
        n_test = max(1 if n >= 3 else 0, int(round(n * test))) if test > 0 else 0
        n_val = max(1 if n - n_test >= 2 else 0, int(round(n * validation))) if validation > 0 else 0
        n_val = min(n_val, max(n - n_test - 1, 0))
        order = rng.permutation(n)
        for rank, i in enumerate(order):
            chosen[groups[i]] = "test" if rank < n_test else "validation" if rank < n_test + n_val else "train"
    return [replace(e, split=chosen[e.group]) for e in examples]


def split_counts(examples: Iterable[TrainingExample]) -> dict[str, int]:
    """Examples per split, in :data:`SPLITS` order (empty splits left out)."""
    counts = Counter(e.split for e in examples)
    return {s: counts[s] for s in SPLITS if counts[s]}
