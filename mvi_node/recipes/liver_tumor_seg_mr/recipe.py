"""liver_tumor_seg_mr: the automatic liver and tumour ROI of MR exams (seed 002, Lin et al.,
J Cancer 2024: a residual U-Net on MRI, grey values scaled 0..1). Torch-free.

Input channels are the exam's sequences, registered onto the target series (the portal
venous phase, the reference grid of ``mr_3seq_grade``) by the shared MR preprocessing
(:func:`mvi_node.preprocess.mr.prepare_mr`: N4 bias-field correction, robust per-sequence
scaling of the body's 0.5/99.5 percentiles to 0..255, rigid registration when the
sequences do not share a frame of reference and study, linear resampling onto the target
grid, 0 outside a sequence's field of view); divided by 255 and resampled to
4 x 2.5 x 2.5 mm. A sequence the exam lacks, or one whose registration fails its quality
check, is a channel of zeros (training blanked channels as often). Tiles 32 x 96 x 96
(128 x 240 x 240 mm), overlap 0.25, Gaussian blending, as the CT model.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from mvi_node.infer.segmentation import SegmentationRecipe, resample, series_spacing
from mvi_node.roi import SeriesGeometry

NAME = "liver_tumor_seg_mr"
ROLE = "mr_portal_venous"
#: the sequences read as channels, in the graph's channel order (the target first): the
#: portal venous phase (tumour darker than liver), the arterial phase (hyper-enhancing
#: tumour), the 3 min transitional/delayed phase (washout; both agents have it) and T2
#: (tumour brighter than liver, on 6 mm slices: resampled onto the target grid)
CHANNEL_ROLES = (ROLE, "mr_arterial", "mr_transitional", "mr_t2")


class LiverTumorSegMr(SegmentationRecipe):
    name = NAME
    summary = ("Lin 2024 (seed 002): residual 3D U-Net, liver and tumour on registered MR sequences "
               "(portal venous, arterial, transitional, T2)")
    modalities = frozenset({"MR"})
    requires = (ROLE,)
    channel_roles = CHANNEL_ROLES
    trainer = "mvi_node.recipes.liver_tumor_seg_mr.train"
    labels = ("background", "liver", "tumour")
    spacing_mm = (4.0, 2.5, 2.5)
    patch = (32, 96, 96)
    overlap = 0.25
    blend = "gaussian"
    multiple = (4, 8, 8)
    min_lesion_ml = 0.2
    min_liver_ml = 100.0

    def reads_phase(self, geo: SeriesGeometry, target: SeriesGeometry) -> bool:
        return True  # another frame of reference or study is registered, not refused

    def channel_inputs(self, target: SeriesGeometry, phases: Mapping[str, SeriesGeometry],
                       channels: int) -> tuple[np.ndarray, dict[str, Any]]:
        """The registered sequences on the model grid (channels, z, y, x), 0..1, and per channel
        its role, series and registration (or why it is zeros)."""
        from mvi_node.preprocess.mr import MRPreprocessError, prepare_mr

        roles = self.channel_roles[:max(1, channels)]
        series = {ROLE: list(target.datasets)}
        series.update({r: list(phases[r].datasets) for r in roles[1:] if r in phases})
        missing = {r: "not in the exam" for r in roles[1:] if r not in phases}
        while True:  # a sequence that cannot be used is dropped (zeros), the target never
            try:
                vols = prepare_mr(series, ROLE)
                break
            except MRPreprocessError as exc:
                if exc.role in (None, ROLE) or exc.role not in series:
                    raise
                missing[exc.role] = f"unusable ({exc.reason})"
                del series[exc.role]
        spacing = series_spacing(target)
        x = [resample(vols.arrays[ROLE] / np.float32(255.0), spacing, self.spacing_mm)]
        used = [{"role": ROLE, "series_instance_uid": str(target.datasets[0].get("SeriesInstanceUID", ""))}]
        for role in roles[1:]:
            if role in vols.arrays:
                x.append(resample(vols.arrays[role] / np.float32(255.0), spacing, self.spacing_mm, x[0].shape))
                reg = vols.registration.get(role)
                used.append({"role": role, "series_instance_uid": str(series[role][0].get("SeriesInstanceUID", "")),
                             "registration": reg.reason if reg is not None else "",
                             "registered": bool(reg.performed) if reg is not None else False})
            else:
                x.append(np.zeros(x[0].shape, np.float32))
                used.append({"role": role, "series_instance_uid": None, "missing": missing.get(role, "not read")})
        if channels <= 1:
            return x[0], {}
        return np.stack(x).astype(np.float32), {"channels": used, "mr_timings": vols.record()["timings"]}

    def preprocessing(self) -> dict[str, Any]:
        from mvi_node.preprocess.mr import PREPROCESSING_CONSTANTS

        return {"labels": list(self.labels), "channels": list(self.channel_roles), "reference": ROLE,
                "image_scale": "MR preprocessing grey (body percentiles 0.5/99.5 -> 0..255 after N4) / 255",
                "mr_preprocessing": PREPROCESSING_CONSTANTS, "missing_channel": "zeros",
                "spacing_mm": list(self.spacing_mm),
                "resampling": "linear (SimpleITK), edges aligned; back to the series grid linear per class",
                "patch": list(self.patch), "overlap": self.overlap, "blend": self.blend,
                "min_lesion_ml": self.min_lesion_ml, "min_liver_ml": self.min_liver_ml,
                "slice_order": "ascending along the slice normal (feet to head for axial LPS)"}


RECIPE = LiverTumorSegMr
