"""Training volumes made by the serving path itself, from synthetic MR exams written as DICOM.

Each exam is generated (``mvi_node.synth``, no annotation), written to a scratch folder,
selected by the node's own selection, and its channels computed by the recipe's
:meth:`~mvi_node.recipes.liver_tumor_seg_mr.recipe.LiverTumorSegMr.channel_inputs` (the
MR preprocessing: N4, robust scaling, registration, resampling): what the model sees in
training is what the node feeds it. The generator's truth (``truth/<accession>/``, on the
dynamic T1 grid the portal venous series lies on) becomes labels 0 background, 1 liver
(with its lesions removed), 2 tumour, resampled (nearest) onto the model grid.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mvi_node.infer.segmentation import resample, series_spacing
from mvi_node.recipes.liver_tumor_seg_mr.recipe import CHANNEL_ROLES, ROLE, LiverTumorSegMr
from mvi_node.recipes.seg_evaluate import truth_on_series
from mvi_node.recipes.seg_patches import Volume, volume_of

RECIPE = LiverTumorSegMr()


def exam_labels(liver: np.ndarray, lesions: np.ndarray) -> np.ndarray:
    out = liver.astype(np.uint8)
    out[lesions > 0] = 2
    return out


def training_volume(seed: int, index: int, vendor: str, matrix: int, agent: str | None = None,
                    hard_cases: str = "none", work: Path | None = None) -> Volume | None:
    """One exam through the serving path; None when the selection finds no portal venous phase."""
    from mvi_node.roi import series_geometry
    from mvi_node.select.engine import select_path
    from mvi_node.synth import make_exam

    root = Path(tempfile.mkdtemp(prefix="mrseg-", dir=work))
    try:
        choices: dict[str, Any] = {"vendor": vendor, "matrix": matrix, "hard_cases": hard_cases,
                                   "annotations": "none"}
        if agent:
            choices["agent"] = agent
        entry = make_exam(root, "mr", seed, index, **choices)
        [exam] = select_path(root / entry["dicom_dir"])
        winners = exam.winners()
        if ROLE not in winners:
            return None
        geo = series_geometry(list(winners[ROLE].datasets))
        phases = {r: series_geometry(list(winners[r].datasets)) for r in CHANNEL_ROLES[1:] if r in winners}
        x, _info = RECIPE.channel_inputs(geo, phases, len(CHANNEL_ROLES))
        liver, lesions = truth_on_series(root, entry, geo)
        y = resample(exam_labels(liver, lesions).astype(np.float32), series_spacing(geo), RECIPE.spacing_mm,
                     x.shape[1:], linear=False).round().astype(np.uint8)
        return volume_of(x, y, f"mr|{seed}|{index}|{vendor}|{entry.get('agent', agent)}|{matrix}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _one(job: tuple) -> Volume | None:
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return training_volume(*job)


def training_volumes(jobs: list[tuple], workers: int = 1) -> list[Volume]:
    """``training_volume(*job)`` for every job, in ``workers`` processes; exams without a
    portal venous phase left out."""
    if workers <= 1:
        out = [training_volume(*j) for j in jobs]
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            out = pool.map(_one, jobs, chunksize=1)
    return [v for v in out if v is not None]
