"""What the report stage needs, as plain typed values.

The pipeline fills these from the engine's output (see :mod:`mvi_node.report.outputs`
for the adapter from the ONNX engine); nothing here depends on the engine or a recipe.
Pixel coordinates are image-relative (PS3.3 C.10.5.1.2): (0, 0) is the top-left corner
of the top-left pixel, so the centre of pixel (r, c) is (r + 0.5, c + 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydicom.dataset import Dataset

from mvi_node.concepts import CT_PROCEDURE, INVASION_ABSENT, INVASION_PRESENT, MVI_PROBABILITY, NEOPLASM, Code
from mvi_node.report.uids import derived_uid

MANUFACTURER = "mvi-node project"

Outcome = Literal["ok", "no eligible series", "no tumour ROI", "model unavailable", "error"]


@dataclass(frozen=True)
class ModelIdentity:
    """Who computed the result. ``device_uid`` is derived from the sha256 when not given,
    so a new model file is a new algorithm device."""

    recipe: str
    name: str
    version: str
    sha256: str
    intended_use: str = ""
    training_data: str = ""
    synthetic: bool = False
    manufacturer: str = MANUFACTURER
    device_uid: str = ""
    variant: str = ""
    #: numeric precision of the graph that ran (its sha256 above); "" or "fp32": the exported graph
    precision: str = ""
    #: how the probabilities were calibrated, in words ("" : the graph's own probabilities)
    calibration: str = ""
    calibration_digest: str = ""

    def __post_init__(self) -> None:
        if not self.device_uid:
            object.__setattr__(self, "device_uid", derived_uid("device", self.recipe, self.uid_key or "no-model"))

    @property
    def uid_key(self) -> str:
        """What makes this algorithm another one for result UIDs: the graph, and its calibration."""
        return self.sha256 + (f"+cal:{self.calibration_digest}" if self.calibration_digest else "")

    @property
    def reduced_precision(self) -> str:
        """The precision when it is not the exported fp32 graph's, else ""."""
        return self.precision if self.precision not in ("", "fp32") else ""

    @property
    def label(self) -> str:
        return f"{self.name or self.recipe} {self.version}".strip()

    @property
    def software_versions(self) -> list[str]:
        from mvi_node import __version__

        shown = ", ".join(x for x in (self.variant, self.reduced_precision) if x)
        model = f"{self.recipe} {self.version}" + (f" ({shown})" if shown else "")
        return [f"mvi-node {__version__}", model.strip() or "no model"]


@dataclass(frozen=True)
class PlanarRegion:
    """A planar ROI on the key slice. ``points`` (N, 2) as (column, row) pixel
    coordinates: a closed polygon (first point repeated or not), or for a CIRCLE the
    centre and one point on the perimeter."""

    graphic_type: Literal["POLYGON", "CIRCLE"]
    points: np.ndarray

    @classmethod
    def circle(cls, center_col: float, center_row: float, radius_px: float) -> "PlanarRegion":
        return cls("CIRCLE", np.array([[center_col, center_row], [center_col + radius_px, center_row]], float))

    @classmethod
    def box(cls, row0: float, col0: float, row1: float, col1: float) -> "PlanarRegion":
        return cls("POLYGON", np.array([[col0, row0], [col1, row0], [col1, row1], [col0, row1]], float))

    def closed_polyline(self) -> np.ndarray:
        pts = np.asarray(self.points, float)
        if self.graphic_type == "CIRCLE":
            (cc, cr), (pc, pr) = pts[:2]
            radius = float(np.hypot(pc - cc, pr - cr))
            t = np.linspace(0, 2 * np.pi, 65)
            return np.stack([cc + radius * np.cos(t), cr + radius * np.sin(t)], axis=1)
        if not np.allclose(pts[0], pts[-1]):
            pts = np.vstack([pts, pts[:1]])
        return pts


@dataclass
class SliceResult:
    """One evaluated slice. ``cam`` (0..1) is either on the slice grid (same shape as the
    slice) or on the crop, then ``crop_box`` = (row0, col0, row1, col1) says where the
    crop lies on the slice (image-relative pixel coordinates, may extend past the edge)."""

    source: Dataset
    probability: float
    cam: np.ndarray | None = None
    crop_box: tuple[float, float, float, float] | None = None
    roi_mask: np.ndarray | None = None
    #: what the image shows when a recipe reads several series (the sequence), else ""
    label: str = ""


@dataclass
class LesionResult:
    tracking_id: str
    probability: float
    threshold: float
    predicted_mvi: bool
    key_slice: Dataset | None = None
    tracking_uid: str = ""  # derived from the result UIDs when empty
    max_diameter_mm: float | None = None
    grade_probabilities: dict[str, float] | None = None
    roi_region: PlanarRegion | None = None
    slices: list[SliceResult] = field(default_factory=list)
    #: volume of a lesion found by the automatic segmentation (None: an annotated ROI)
    volume_ml: float | None = None
    #: further probabilities of the lesion (a nomogram): (concept, value, basis in words)
    scores: list[tuple[Code, float, str]] = field(default_factory=list)


@dataclass(frozen=True)
class OtherLesion:
    """A further lesion the automatic segmentation found, not evaluated by the recipe:
    its own measurement group (volume, maximum diameter) and tracking UID."""

    tracking_id: str
    tracking_uid: str
    volume_ml: float
    max_diameter_mm: float


@dataclass(frozen=True)
class EndpointText:
    """How the report names a recipe's endpoint: the probability concept, the finding
    for each decision, the finding type, and the words burned into the captures."""

    concept: Code = MVI_PROBABILITY
    positive: Code = INVASION_PRESENT
    negative: Code = INVASION_ABSENT
    finding_type: Code = NEOPLASM
    title: str = "MVI"
    present: str = "MVI present"
    absent: str = "MVI absent"


@dataclass
class ReportInput:
    """One exam x model. ``evidence``: the source slices (all of one study, with patient
    and study attributes); when nothing was evaluated, the study's first instance."""

    evidence: list[Dataset]
    model: ModelIdentity
    lesions: list[LesionResult] = field(default_factory=list)
    clinical_factors_used: dict[str, Any] = field(default_factory=dict)
    image_only: bool = False
    outcome: str = "ok"
    outcome_detail: str = ""
    #: (level, width) of the captures: seed 000's CT window; None: the series' own window
    window: tuple[float, float] | None = (70.0, 200.0)
    body_part: str = "LIVER"
    #: what the recipe reports (its endpoint) and the procedure of the exam (CT or MR)
    endpoint: "EndpointText" = None  # type: ignore[assignment]
    procedure: Code = CT_PROCEDURE
    #: (recipe, why) per candidate recipe when no recipe could evaluate the exam
    not_run: tuple[tuple[str, str], ...] = ()
    #: 1 for a first result; n > 1 supersedes version n-1, whose SR is ``predecessors``
    version: int = 1
    predecessors: list[Dataset] = field(default_factory=list)
    #: what the SR says about an automatic ROI (empty: the ROI was an annotation)
    roi_note: str = ""
    #: further lesions of an automatic ROI, reported after the evaluated one
    other_lesions: list[OtherLesion] = field(default_factory=list)
    #: what the SR says about the exam as a whole (parts that had not arrived)
    exam_notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.endpoint is None:
            self.endpoint = EndpointText()

    @property
    def evaluated(self) -> bool:
        return self.outcome == "ok" and bool(self.lesions)
