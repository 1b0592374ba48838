"""Seed 000 pre-processing: window, square box, 0.8 crop, 256 resize, MTD, decoding."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.data import get_testdata_file

from mvi_node.recipes.ct_ap_resnet18 import preprocess as pp


def test_window_maps_level_and_width_to_0_255():
    hu = np.array([-1000, -30, 70, 170, 3000], np.float32)
    assert pp.window(hu).tolist() == [0.0, 0.0, 127.5, 255.0, 255.0]


def test_square_box_is_the_larger_edge_plus_pad():
    m = np.zeros((100, 100), bool)
    m[20:30, 40:60] = True  # 10 rows x 20 cols
    r, c, edge = pp.square_box(m, (0.5, 1.0), pad_mm=10.0)
    assert (r, c) == (25.0, 50.0)
    assert edge == pytest.approx(max(10 * 0.5, 20 * 1.0) + 10.0)


def test_crop_is_0p8_of_the_box_centred_and_256():
    # column index as the image value: the crop's first/last columns tell where it starts and ends
    img = np.tile(np.arange(200, dtype=np.float32), (200, 1))
    out, box = pp.crop_resize(img, (1.0, 1.0), (100.0, 100.0), box_mm=100.0)
    assert out.shape == (256, 256)
    assert box.edge_mm == pytest.approx(80.0) and box.edge_cols == pytest.approx(80.0)
    # crop spans columns 60..140 (edge coordinates) -> pixel-centre values 59.5..139.5 at its borders
    assert out[128, 0] == pytest.approx(60 - 0.5 + 80 / 512, abs=0.05)
    assert out[128, -1] == pytest.approx(140 - 0.5 - 80 / 512, abs=0.05)
    assert np.allclose(out[0], out[255])  # rows carry no signal


def test_crop_past_the_edge_is_filled_with_grey_zero():
    out, _ = pp.crop_resize(np.full((50, 50), 200.0, np.float32), (1.0, 1.0), (0.0, 0.0), box_mm=40.0)
    assert out[0, 0] == 0.0 and out[-1, -1] == pytest.approx(200.0)


def test_every_tumour_slice_and_only_those_gives_a_crop():
    vol = np.random.default_rng(0).normal(60, 20, (6, 64, 64)).astype(np.float32)
    mask = np.zeros(vol.shape, bool)
    mask[[1, 2, 4], 20:30, 25:40] = True
    crops = pp.crops_from_volume(vol, mask, (0.8, 0.8))
    assert crops.slice_indices == [1, 2, 4]
    images = crops.images()
    assert images.shape == (3, 3, 256, 256) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert np.array_equal(images[:, 0], images[:, 2])  # 3 identical channels


def test_max_diameter_of_a_disk():
    sp = 0.7
    yy, xx = np.mgrid[0:200, 0:200]
    disk = ((yy - 100) * sp) ** 2 + ((xx - 90) * sp) ** 2 <= 20.0 ** 2  # diameter 40 mm
    mask = np.zeros((3, 200, 200), bool)
    mask[1] = disk
    assert pp.max_diameter_mm(mask, (sp, sp)) == pytest.approx(40.0, abs=1.5)


# --- decoding every transfer syntax the listener accepts ---------------------------------

def _ct() -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file("CT_small.dcm"))


@pytest.mark.parametrize("syntax", [uid.RLELossless, uid.JPEG2000Lossless, uid.JPEGLSLossless])
def test_lossless_reencoded_slice_decodes_to_the_same_hu(syntax):
    ds = _ct()
    ref = pp.hu(ds)
    ds.compress(syntax)
    back = pydicom.dcmread(pydicom.filebase.DicomBytesIO(_bytes(ds)))
    assert back.file_meta.TransferSyntaxUID == syntax
    assert np.array_equal(pp.hu(back), ref)


def test_deflated_slice_decodes(tmp_path):
    ds = _ct()
    ref = pp.hu(ds)
    ds.file_meta.TransferSyntaxUID = uid.DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "d.dcm", enforce_file_format=True)
    back = pydicom.dcmread(tmp_path / "d.dcm")
    assert back.file_meta.TransferSyntaxUID == uid.DeflatedExplicitVRLittleEndian
    assert np.array_equal(pp.hu(back), ref)


def _bytes(ds) -> bytes:
    buf = pydicom.filebase.DicomBytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.skipif(shutil.which("dcmcjpeg") is None, reason="DCMTK dcmcjpeg not installed")
@pytest.mark.parametrize("flag,syntax,lossless", [("+e1", uid.JPEGLosslessSV1, True), ("+el", uid.JPEGLossless, True),
                                                  ("+eb", uid.JPEGBaseline8Bit, False)])
def test_jpeg_encoded_by_dcmtk_decodes(tmp_path, flag, syntax, lossless):
    src = tmp_path / "ct.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm"), src)
    subprocess.run(["dcmcjpeg", flag, str(src), str(tmp_path / "j.dcm")], check=True)
    back = pydicom.dcmread(tmp_path / "j.dcm")
    assert back.file_meta.TransferSyntaxUID == syntax
    ref, got = pp.hu(_ct()), pp.hu(back)
    if lossless:
        assert np.array_equal(got, ref)
    else:  # 8-bit lossy: same picture, not the same numbers
        assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.98


@pytest.mark.parametrize("name", ["JPGExtended.dcm", "JPEG2000.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm",
                                  "MR_small_implicit.dcm", "image_dfl.dcm"])
def test_reference_files_from_pydicom_decode(name):
    ds = pydicom.dcmread(get_testdata_file(name))
    grey = pp.window(pp.hu(ds))
    assert grey.shape == (int(ds.Rows), int(ds.Columns)) and np.isfinite(grey).all()


def test_a_crop_maps_back_onto_its_slice():
    rng = np.random.default_rng(3)
    img = np.kron(rng.random((20, 20)), np.ones((8, 8))).astype(np.float32) * 255  # smooth-ish blocks
    crop, box = pp.crop_resize(img, (0.6, 0.6), (90.0, 70.0), box_mm=60.0)
    back = pp.map_to_slice(crop, box, img.shape)
    inside = np.zeros(img.shape, bool)
    half = box.edge_rows / 2
    inside[int(90 - half) + 2:int(90 + half) - 2, int(70 - half) + 2:int(70 + half) - 2] = True
    assert np.abs(back[inside] - img[inside]).mean() < 5.0  # interpolation only
    assert back[0, 0] == 0.0 and back[-1, -1] == 0.0  # outside the crop
