"""Report stage, Grad-CAM secondary captures: pixels, references, identity, validity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mvi_node.report import build_outputs, save_outputs, sc_preview_png
from mvi_node.report.sc import MIN_SIZE, cam_on_slice, jet, windowed
from mvi_node.report.validate import dciodvfy_errors
from test_report_sr import Exam

pytestmark = pytest.mark.skipif(not Path("/usr/bin/dciodvfy").exists(), reason="dicom3tools not installed")


@pytest.fixture(scope="module")
def exam(tmp_path_factory) -> Exam:
    return Exam(tmp_path_factory.mktemp("exam"))


@pytest.fixture(scope="module")
def built(exam):
    inp = exam.report(positive=True, region="circle")
    return inp, build_outputs(inp, n_sc=3)


def test_captures_are_rgb_burned_in_and_reference_their_source(exam, built):
    inp, (sr, *scs) = built
    assert len(scs) == 3
    slices = sorted(inp.lesions[0].slices, key=lambda s: -s.probability)[:3]
    for rank, (sc, sl) in enumerate(zip(scs, slices), start=1):
        src = sl.source
        assert sc.Modality == "OT" and sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
        assert sc.PhotometricInterpretation == "RGB" and sc.SamplesPerPixel == 3
        assert sc.BitsAllocated == 8 and sc.BitsStored == 8
        assert sc.pixel_array.shape == (sc.Rows, sc.Columns, 3) and sc.pixel_array.dtype == np.uint8
        assert sc.BurnedInAnnotation == "YES"
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
        assert sc.SourceImageSequence[0].ReferencedSOPClassUID == src.SOPClassUID
        assert sc.StudyInstanceUID == exam.study_uid and sc.PatientID == src.PatientID
        assert sc.SeriesInstanceUID not in (src.SeriesInstanceUID, sr.SeriesInstanceUID)
        assert sc.InstanceNumber == rank
        assert sc.BodyPartExamined == "LIVER"
        scale = sc.Rows // int(src.Rows)
        assert scale >= 1 and sc.Rows >= min(MIN_SIZE, int(src.Rows))
        assert [float(v) for v in sc.PixelSpacing] == pytest.approx([float(v) / scale for v in src.PixelSpacing])
        assert sc.DerivationCodeSequence[0].CodeValue == "130403"
        assert "Grad-CAM" in sc.DerivationDescription
        assert "NOT FOR CLINICAL USE" in sc.SeriesDescription
    assert len({sc.SeriesInstanceUID for sc in scs}) == 1
    assert len({sc.SOPInstanceUID for sc in scs}) == 3


def test_heatmap_is_blended_at_the_cam_peak(built):
    inp, (_, *scs) = built
    top = max(inp.lesions[0].slices, key=lambda s: s.probability)
    sc = scs[0]
    scale = sc.Rows // int(top.source.Rows)
    r0, c0, r1, c1 = top.crop_box
    pr, pc = int((r0 + r1) / 2), int((c0 + c1) / 2)  # the Gaussian's peak, on the slice grid
    grey = windowed(top.source)
    px = sc.pixel_array.astype(int)
    peak = px[pr * scale + scale // 2, pc * scale + scale // 2]
    assert np.abs(peak - int(grey[pr, pc])).max() > 40  # coloured, not the plain windowed grey
    assert peak[0] > peak[2]  # hot end of jet: red over blue
    # far from the CAM (bottom-right corner, no text there) the slice is plain grey
    corner = px[-3, -3]
    assert corner[0] == corner[1] == corner[2]
    assert abs(int(corner[0]) - int(grey[-1, -1])) <= 2


def test_burned_in_text_is_drawn(built):
    _, (_, sc, *_) = built
    band = sc.pixel_array[:40, :300].astype(int)
    # the caption is yellow (255, 255, 0): present only as text on a grey/black slice
    assert ((band[..., 0] > 200) & (band[..., 1] > 200) & (band[..., 2] < 60)).sum() > 50


def test_captures_pass_dciodvfy_and_preview(built, tmp_path):
    _, outputs = built
    paths = save_outputs(outputs, tmp_path / "out")
    assert [p.name for p in paths] == [f"{d.SOPInstanceUID}.dcm" for d in outputs]
    for path in paths:
        assert dciodvfy_errors(path) == [], path.name
    png = sc_preview_png(outputs[1], tmp_path / "sc.png")
    with Image.open(png) as image:
        assert image.mode == "RGB" and image.size == (outputs[1].Columns, outputs[1].Rows)


def test_number_of_captures_and_none_when_not_evaluated(exam):
    assert len(build_outputs(exam.report(), n_sc=1)) == 2
    assert len(build_outputs(exam.report(), n_sc=10)) == 1 + len(exam.report().lesions[0].slices)
    assert len(build_outputs(exam.not_evaluated("no tumour ROI"), n_sc=3)) == 1


def test_crop_cam_maps_back_into_its_box():
    cam = np.zeros((64, 64), np.float32)
    cam[30:34, 30:34] = 1.0
    out = cam_on_slice(cam, (10.0, 20.0, 42.0, 52.0), (96, 96))  # 32 px box: 2 crop px per slice px
    assert out.shape == (96, 96)
    r, c = np.unravel_index(np.argmax(out), out.shape)
    assert abs(r - 26) <= 1 and abs(c - 36) <= 1  # box centre (26, 36)
    assert out[:9].max() == 0 and out[:, 53:].max() == 0  # nothing outside the box
    same = np.random.default_rng(0).random((96, 96)).astype(np.float32)
    assert np.array_equal(cam_on_slice(same, None, (96, 96)), same)


def test_jet_endpoints():
    assert jet(np.array([0.0]))[0].tolist() == [0, 0, 128]
    assert jet(np.array([1.0]))[0].tolist() == [128, 0, 0]
    assert jet(np.array([0.5]))[0].tolist()[1] == 255
