"""Which automatic segmentation a recipe's result carries (its DICOM SEG goes to PACS with the SR).

One series may hold several phases (an Enhanced CT, or a series the scanner wrote with arterial
and portal images): each phase is segmented on its own. The engine must attach the segmentation
the recipe's ROI came from, not the first one of that series that found a lesion."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from mvi_node.infer.segmentation import ExamSegmentations, SegmentationService
from mvi_node.roi.automatic import LesionStats, Segmentation

SERIES = "1.2.826.0.1.3680043.8.498.1"


def _phase(first_sop: int, z0: float, n: int = 4) -> list[Dataset]:
    out = []
    for i in range(n):
        ds = Dataset()
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.2.{first_sop + i}"
        ds.SeriesInstanceUID = SERIES
        ds.Modality = "CT"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, z0 + 5.0 * i]
        ds.PixelSpacing = [1.0, 1.0]
        ds.Rows = ds.Columns = 8
        out.append(ds)
    return out


class _OneLesionPerPhase(SegmentationService):
    """A served segmenter that finds one lesion on whatever phase it is given (no model: the
    bookkeeping around it is what is tested)."""

    def __init__(self) -> None:
        super().__init__([], runner=lambda m: None, identity=lambda name: {})
        self.calls = 0

    def segment(self, target, phases=None):
        self.calls += 1
        geo = target  # ExamSegmentations passes the series' sorted geometry
        lesion_map = np.zeros(geo.shape, np.uint16)
        lesion_map[1, 2:4, 2:4] = 1
        return Segmentation(geo, np.ones(geo.shape, bool), lesion_map,
                            [LesionStats(1, 0.1, 2.0, (1, 1), 4)], {"recipe": "liver_tumor_seg", "model_version": "t"})


def test_the_segmentation_of_the_phase_a_recipe_used_is_the_one_returned():
    arterial, portal = _phase(100, 0.0), _phase(200, 0.0)
    auto = ExamSegmentations(_OneLesionPerPhase())
    auto(arterial)  # recipe 1's ROI: the arterial phase
    mark = auto.mark()
    auto(portal)  # recipe 2's ROI: the portal phase of the same series
    seg = auto.segmentation(SERIES, since=mark)
    assert seg is not None and seg.geometry.datasets[0].SOPInstanceUID == portal[0].SOPInstanceUID
    # without a mark the latest call of the series counts too (the old lookup gave the first: arterial)
    assert auto.segmentation(SERIES).geometry.datasets[0].SOPInstanceUID == portal[0].SOPInstanceUID


def test_a_phase_asked_again_is_not_segmented_again_and_is_still_found_after_a_mark():
    arterial, portal = _phase(100, 0.0), _phase(200, 0.0)
    service = _OneLesionPerPhase()
    auto = ExamSegmentations(service)
    auto(arterial)
    auto(portal)
    mark = auto.mark()
    auto(arterial)  # recipe 3 uses the arterial phase: cached, and attributed to recipe 3
    assert service.calls == 2
    seg = auto.segmentation(SERIES, since=mark)
    assert seg is not None and seg.geometry.datasets[0].SOPInstanceUID == arterial[0].SOPInstanceUID
    assert auto.segmentation("1.2.3.4", since=0) is None  # another series: none
    assert auto.segmentation(SERIES, since=auto.mark()) is None  # nothing asked since
