"""Every accepted transfer syntax is stored as received and decodes in later stages."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    RLELossless,
)

from conftest import storescu
from mvi_node.synth.plain_series import plain_ct_series

# (DCMTK converter arguments or "pydicom", expected transfer syntax, lossless?,
#  the storescu option that proposes that syntax so the bytes travel unconverted)
VARIANTS = {
    "implicit": (["dcmconv", "+ti"], ImplicitVRLittleEndian, True, "-xi"),
    "deflated": (["dcmconv", "+td"], DeflatedExplicitVRLittleEndian, True, "-xd"),
    "jpeg-baseline": (["dcmcjpeg", "+eb"], JPEGBaseline8Bit, False, "-xy"),
    "jpeg-extended": (["dcmcjpeg", "+ee"], JPEGExtended12Bit, False, "-xx"),
    "jpeg-lossless": (["dcmcjpeg", "+e1"], JPEGLosslessSV1, True, "-xs"),
    "rle": (["dcmcrle"], RLELossless, True, "-xr"),
    "jpeg2000-lossless": ("pydicom", JPEG2000Lossless, True, "-xv"),
}


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ts")
    files = {}
    for i, (name, (how, ts, _, _)) in enumerate(VARIANTS.items()):
        src = plain_ct_series(root / "src" / name, slices=1, matrix=64, seed=40 + i)[0]
        dst = root / "enc" / name / "img.dcm"
        dst.parent.mkdir(parents=True)
        if how == "pydicom":
            ds = dcmread(src)
            ds.compress(ts)
            ds.save_as(dst)
        else:
            subprocess.run([f"/usr/bin/{how[0]}", *how[1:], str(src), str(dst)], check=True)
        assert dcmread(dst, stop_before_pixels=True).file_meta.TransferSyntaxUID == ts
        files[name] = (src, dst)
    return files


def test_each_syntax_is_stored_as_received_and_decodes(node, encoded):
    n = node()
    for name, (src, enc) in encoded.items():
        out = storescu(n.port, enc, extra=[VARIANTS[name][3]])
        # storescu exits 0 even when a store fails: read what it says
        assert "Failed" not in out.stdout + out.stderr and "Converting" not in out.stdout, (name, out.stderr)
    staged = {p.stem: p for p in (n.data_dir / "staging").rglob("*.dcm")}
    assert len(staged) == len(encoded)
    for name, (src, enc) in encoded.items():
        sent = dcmread(enc)
        kept = dcmread(staged[sent.SOPInstanceUID])
        assert kept.file_meta.TransferSyntaxUID == VARIANTS[name][1], name
        assert kept.PixelData == sent.PixelData, f"{name}: bytes changed on the way in"
        pixels, original = kept.pixel_array, dcmread(src).pixel_array
        assert pixels.shape == original.shape
        if VARIANTS[name][2]:
            assert np.array_equal(pixels, original), f"{name}: lossless decode differs"
        else:
            assert np.corrcoef(pixels.ravel(), original.ravel())[0, 1] > 0.9, name
