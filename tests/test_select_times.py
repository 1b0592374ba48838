"""A unit's acquisition start: the earliest time of day across midnight, by bisection,
equal to the pairwise count it replaced (issue 17: work proportional to the slices)."""

from __future__ import annotations

import random

from mvi_node.select.series import earliest_time, time_diff


def _pairwise(times):
    return min(times, key=lambda t: sum(time_diff(o, t) < 0 for o in times)) if times else None


def test_earliest_time_is_the_pairwise_answer_including_midnight_and_12_h_ties():
    rng = random.Random(17)
    for _ in range(5000):
        n = rng.randint(1, 30)
        base = rng.uniform(0, 86400)
        kind = rng.random()
        if kind < 0.3:  # a series across midnight
            times = [(86400 - 300 + rng.uniform(0, 600)) % 86400 for _ in range(n)]
        elif kind < 0.6:  # duplicates and values exactly 12 h apart, at DICOM's ms resolution
            times = [round(rng.choice([base, (base + 43200) % 86400, (base + 1) % 86400]), 3) for _ in range(n)]
        else:
            times = [round(rng.uniform(0, 86400), 3) for _ in range(n)]
        assert earliest_time(times) == _pairwise(times), times
    assert earliest_time([]) is None
    assert earliest_time([86399.0, 10.0, 5.0]) == 86399.0  # 23:59:59 is before 00:00:05
