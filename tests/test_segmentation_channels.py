"""The segmentation model's extra input channels (liver_tumor_seg 0.2.0 and later: arterial +
portal venous phase): the other phase brought onto the arterial grid in patient coordinates, a
missing phase fed as zeros, the training patches' shifted and blanked channels, and the
exam's phases reaching the served model through the engine's automatic ROI."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from mvi_node.infer.segmentation import AIR_HU, input_channels, phase_on_grid, window01
from mvi_node.recipes.liver_tumor_seg.recipe import LiverTumorSeg
from mvi_node.roi import series_geometry
from mvi_node.synth import make_exam


def _series(volume: np.ndarray, origin, spacing_zyx, frame_uid: str) -> list[Dataset]:
    """In-memory axial CT images of ``volume`` (z, y, x HU) at ``origin`` (x, y, z mm)."""
    series_uid = generate_uid()
    out = []
    for z, plane in enumerate(volume):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = CTImageStorage, generate_uid(), series_uid
        ds.Modality, ds.FrameOfReferenceUID = "CT", frame_uid
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [float(origin[0]), float(origin[1]), float(origin[2] + z * spacing_zyx[0])]
        ds.PixelSpacing = [float(spacing_zyx[1]), float(spacing_zyx[2])]
        ds.SliceThickness = float(spacing_zyx[0])
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (plane + 1024).astype(np.int16).tobytes()
        out.append(ds)
    return out[::-1]  # any order: the geometry sorts them


def test_a_phase_on_another_grid_lands_where_it_is_in_patient_coordinates():
    frame = generate_uid()
    target = series_geometry(_series(np.zeros((10, 40, 40)), (0.0, 0.0, 0.0), (5.0, 2.0, 2.0), frame))
    # the other phase: 1 mm pixels, starting 10 mm right of and 5 mm above the target, a bright
    # block at x 30-50 mm, y 20-40 mm, z 15-25 mm in patient coordinates
    src = np.full((12, 60, 60), 40.0)
    xs, ys, zs = 10.0 + np.arange(60), 0.0 + np.arange(60), 5.0 + 5.0 * np.arange(12)
    src[np.ix_((zs >= 15) & (zs <= 25), (ys >= 20) & (ys <= 40), (xs >= 30) & (xs <= 50))] = 300.0
    moved = series_geometry(_series(src, (10.0, 0.0, 5.0), (5.0, 1.0, 1.0), frame))

    hu = phase_on_grid(moved, target)
    assert hu.shape == target.shape
    # target voxel (z, y, x) is at (2x, 2y, 5z) mm
    assert hu[4, 15, 20] == pytest.approx(300.0, abs=1)   # x 40, y 30, z 20: inside the block
    assert hu[4, 15, 10] == pytest.approx(40.0, abs=1)    # x 20: outside the block, inside the phase
    assert hu[0, 15, 20] == pytest.approx(AIR_HU)          # z 0: above the phase's first slice: air
    assert hu[4, 15, 2] == pytest.approx(AIR_HU)           # x 4: left of the phase's field of view
    # the same grid: a plain copy
    same = series_geometry(_series(np.arange(10 * 40 * 40).reshape(10, 40, 40) % 500, (0, 0, 0), (5.0, 2.0, 2.0),
                                   frame))
    assert np.array_equal(phase_on_grid(same, target), np.arange(10 * 40 * 40).reshape(10, 40, 40) % 500)


class _Recorder:
    """A two-channel model runner in numpy that keeps the tiles it was fed: tumour where the
    portal channel is darker than the arterial one, liver elsewhere inside the body."""

    input_channels = 2
    variants: dict = {}

    def __init__(self) -> None:
        self.tiles: list[np.ndarray] = []

    def threshold(self, variant: str) -> float:
        return 0.5

    def run(self, variant, feeds, outputs, batched=()):
        x = feeds["image"]
        self.tiles.append(x.copy())
        art, por = x[:, 0], x[:, 1]
        tumour = (por < art - 0.05) & (art > 0.1)
        liver = (art > 0.1) & ~tumour
        probs = np.stack([~(tumour | liver), liver, tumour], 1).astype(np.float32)
        return [probs]


@pytest.fixture(scope="module")
def exam(tmp_path_factory):
    from mvi_node.select.engine import select_path

    root = tmp_path_factory.mktemp("channels") / "exam"
    make_exam(root, "ct", 777, 1, hard_cases="none", matrix=128, annotations="none")
    [found] = select_path(root / "dicom")
    return found.winners()


def test_the_portal_phase_is_the_second_channel_and_a_missing_one_is_zeros(exam):
    recipe = LiverTumorSeg()
    art = series_geometry(list(exam["ct_arterial"].datasets))
    por = series_geometry(list(exam["ct_portal_venous"].datasets))
    ident = {"recipe": recipe.name, "model_version": "test"}

    runner = _Recorder()
    seg = recipe.segment(art, runner, ident, phases={"ct_portal_venous": por})
    assert all(t.shape[1] == 2 for t in runner.tiles)
    used = seg.info["channels"]
    assert [c["role"] for c in used] == ["ct_arterial", "ct_portal_venous"]
    assert used[1]["series_instance_uid"] == str(por.datasets[0].SeriesInstanceUID)
    # what the model read: the arterial phase and the portal phase on the arterial grid, windowed
    from mvi_node.infer.segmentation import hu_volume, series_spacing

    want = recipe.model_input(phase_on_grid(por, art), series_spacing(art))
    art_x = recipe.model_input(hu_volume(art), series_spacing(art))
    assert not np.allclose(want, art_x)  # the phases differ, so the check below means something
    again = _Recorder()
    recipe.probabilities(np.stack([art_x, want]), lambda t: again.run("segmentation", {"image": t}, [])[0])
    assert len(again.tiles) == len(runner.tiles)
    assert all(np.array_equal(a, b) for a, b in zip(again.tiles, runner.tiles))
    # the SEG's source stays the arterial series
    assert seg.series_uid == str(art.datasets[0].SeriesInstanceUID)

    blank = _Recorder()
    seg2 = recipe.segment(art, blank, ident, phases={})
    assert all(np.count_nonzero(t[0, 1]) == 0 for t in blank.tiles)
    assert seg2.info["channels"][1] == {"role": "ct_portal_venous", "series_instance_uid": None,
                                        "missing": "not in the exam"}
    assert not np.array_equal(seg.lesion_map > 0, seg2.lesion_map > 0)  # the channel changes the answer


def test_a_one_channel_model_reads_the_arterial_phase_alone(exam):
    recipe = LiverTumorSeg()
    art = series_geometry(list(exam["ct_arterial"].datasets))

    class One(_Recorder):
        input_channels = 1

        def run(self, variant, feeds, outputs, batched=()):
            self.tiles.append(feeds["image"].copy())
            x = feeds["image"][:, :1]
            return [np.concatenate([1 - x, x, 0 * x], 1).astype(np.float32)]

    runner = One()
    seg = recipe.segment(art, runner, {"recipe": recipe.name}, phases={})
    assert all(t.shape[1] == 1 for t in runner.tiles) and "channels" not in seg.info


def test_the_served_model_declares_its_channels():
    from mvi_node.infer.registry import DEFAULT_ROOT, ModelRegistry, _version_key

    registry = ModelRegistry([DEFAULT_ROOT])
    served = registry.get("liver_tumor_seg")
    installed = [m.version for m in registry.models["liver_tumor_seg"]]
    # the newest installed version is served (0.2.0 and later read two phases)
    assert served is not None and served.version == max(installed, key=_version_key)
    assert _version_key(served.version) >= _version_key("0.2.0")
    assert input_channels(served) == 2
    old = ModelRegistry([DEFAULT_ROOT], pins={"liver_tumor_seg": "0.1.0"}).get("liver_tumor_seg")
    assert input_channels(old) == 1


def test_training_patches_shift_and_blank_the_extra_phase_only():
    from mvi_node.recipes.liver_tumor_seg.data import Volume, patch_batch

    rng = np.random.default_rng(0)
    art = rng.random((40, 64, 64), dtype=np.float32) * 0.5 + 0.25
    por = art[::-1].copy()
    y = np.zeros(art.shape, np.uint8)
    y[15:25, 20:40, 20:40] = 2
    vol = Volume(np.stack([art, por]), y, "t", np.flatnonzero(y == 2), np.flatnonzero(y == 1))
    # never blanked, never shifted: each channel is its own phase's crop
    x, lab = patch_batch([vol], np.random.default_rng(1), (16, 32, 32), 4, p_tumour=1.0)
    assert x.shape == (4, 2, 16, 32, 32) and lab.shape == (4, 1, 16, 32, 32)
    assert all(np.corrcoef(x[k, 0].ravel(), x[k, 1].ravel())[0, 1] < 0.5 for k in range(4))  # two phases
    # always blanked: the extra channel is exactly zero, the arterial one is not
    x, _ = patch_batch([vol], np.random.default_rng(2), (16, 32, 32), 4, p_tumour=1.0, p_blank=1.0)
    assert np.count_nonzero(x[:, 1]) == 0 and np.count_nonzero(x[:, 0]) > 0
    # shifted: the extra channel comes from up to (1, 2, 2) voxels away, the labels and the
    # arterial channel do not move (a bright block where the labels say tumour)
    block = (0.2 + 0.6 * (y == 2)).astype(np.float32)
    same = Volume(np.stack([block, block]), y, "t", vol.tumour_idx, vol.liver_idx)
    x, lab = patch_batch([same], np.random.default_rng(3), (16, 32, 32), 8, p_tumour=1.0, shift=(1, 2, 2))
    tumour = lab[:, 0] == 2
    assert np.mean((x[:, 0] > 0.5) == tumour) > 0.999
    off = [np.mean((x[k, 1] > 0.5) != tumour[k]) for k in range(8)]
    assert max(off) > 0.005  # some patches read the portal channel off the labels
    x, lab = patch_batch([same], np.random.default_rng(3), (16, 32, 32), 8, p_tumour=1.0)
    assert np.mean((x[:, 1] > 0.5) == (lab[:, 0] == 2)) > 0.999  # no shift: in register




def test_an_exam_without_the_portal_phase_gets_the_one_channel_version(exam):
    """The served two-channel version with a blank channel does no better than 0.1.0, trained on
    the arterial phase alone (cards, varied set: 0.2.0 tumour Dice 0.36, 16/33 lesions; 0.3.0 0.48,
    21/33; 0.1.0 0.49, 21/33): the engine serves 0.1.0 then."""
    from mvi_node.infer.engine import Engine
    from mvi_node.infer.registry import DEFAULT_ROOT, ModelRegistry
    from mvi_node.roi.automatic import Segmentation

    arterial = list(exam["ct_arterial"].datasets)
    engine = Engine(ModelRegistry([DEFAULT_ROOT]), providers=["CPUExecutionProvider"])
    alone = engine.segmentation.for_exam({"ct_arterial": exam["ct_arterial"].datasets})
    roi = alone(arterial)
    [found] = list(alone.results.values())
    assert isinstance(found, Segmentation)
    assert found.model["model_version"] == "0.1.0" and "channels" not in found.info
    [old] = [m for m in engine.registry.models["liver_tumor_seg"] if m.version == "0.1.0"]
    assert found.model["sha256"] == old.variants["segmentation"].sha256
    assert found.source == "automatic: liver_tumor_seg 0.1.0" and found.found  # 0.1.0 finds this exam's lesion
    assert roi.model["model_version"] == "0.1.0"  # what the SR and the SEG name
    # with the phase: the served version (two channels)
    served = engine.registry.get("liver_tumor_seg")
    assert served.version != "0.1.0" and input_channels(served) == 2
    both = engine.segmentation.for_exam({r: u.datasets for r, u in exam.items()})
    both(arterial)
    [found2] = list(both.results.values())
    assert found2.model["model_version"] == served.version
    # a pinned version is what the site asked for: no fallback, the missing phase is a blank channel
    pinned = Engine(ModelRegistry([DEFAULT_ROOT], pins={"liver_tumor_seg": "0.2.0"}), providers=["CPUExecutionProvider"])
    auto = pinned.segmentation.for_exam({"ct_arterial": exam["ct_arterial"].datasets})
    auto(arterial)
    [found3] = list(auto.results.values())
    assert found3.model["model_version"] == "0.2.0"
    assert found3.info["channels"][1]["missing"] == "not in the exam"
