"""A short seeded sample of the adversarial ingest run (bench/fuzz_ingest.py, issue #15 item 3).

A few hundred mutated datasets (truncations, wrong VRs, huge and undefined lengths,
nested sequences, wrong transfer syntax, byte flips, splices, file meta inside the
dataset) against a live node over real associations: every one gets a proper status,
nothing is left half-written, every acknowledged instance reads back in pydicom, memory
stays flat and the node keeps answering C-ECHO. The full run's figures are in
bench/RESULTS.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fuzz_ingest import MUTATIONS, run  # noqa: E402


def test_seeded_fuzz_sample(tmp_path):
    report = run(seed=15, count=300, work=tmp_path)
    assert report["failures"] == [], report["failures"]
    assert report["accepted"] > 0 and report["refused"] > 0
    assert set(MUTATIONS) | {"wrong_syntax"} <= set(report["by_kind"])
    assert report["seconds"] < 60
