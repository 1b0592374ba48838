"""A real-world messy exam over DICOM (#16 item 3): two SEGs, one "Liver" (organ) and
one "Tumor" (lesion), and one coronal reference image filed inside the axial arterial
series. The node must still select the axial arterial stack and take the tumour, not
the liver, as the ROI."""

from __future__ import annotations

import json
import shutil

import httpx
import numpy as np
import pydicom
from pydicom.uid import generate_uid

from conftest import storescu
from mvi_node.synth import make_exam
from test_e2e_results import _texts
from test_roi import _organ_seg, _role, _series
from mvi_node.select.series import read_headers


def _stray_coronal(arterial: list, out_dir) -> None:
    """One coronal reference image in the arterial series (same series UID, own SOP UID)."""
    src = pydicom.dcmread(sorted(arterial, key=lambda d: int(d.InstanceNumber))[len(arterial) // 2].filename)
    src.SOPInstanceUID = src.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    src.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    src.InstanceNumber = 999
    src.ImageType = ["DERIVED", "SECONDARY", "REFORMATTED"]
    src.save_as(out_dir / "coronal_reference.dcm", enforce_file_format=True)


def test_liver_and_tumour_segs_with_a_stray_coronal_image_over_dicom(node, tmp_path, pacs):
    root = tmp_path / "exam"
    entry = make_exam(root, "ct", seed=11, index=0, mvi=True, matrix=128, hard_cases="none", annotations="seg",
                      seg_on="arterial")
    headers = [ds for _p, ds in read_headers(root / entry["dicom_dir"])]
    arterial = _series(headers, _role(entry, "ct_arterial"))
    send = tmp_path / "send"
    shutil.copytree(root / entry["dicom_dir"], send)
    shutil.copy(_organ_seg(entry, root, headers), send / "liver_seg.dcm")
    _stray_coronal(arterial, send)
    # no automatic segmentation: the ROI can only come from the exam's outlines
    n = node(quiet=1.0, env={**pacs.as_destination(),
                             "MVI_MODELS__PINS": json.dumps({"liver_tumor_seg": "none"})})
    storescu(n.port, send, extra=["-R"])
    pacs.wait_for(4, settle=0)
    got = [pydicom.dcmread(f) for f in pacs.received()]
    jobs = [j for j in n.status_jobs() if j["kind"] == "study"]
    detail = httpx.get(f"http://127.0.0.1:{n.admin_port}/jobs/{jobs[0]['id']}", timeout=10).json()
    assert n.status()["instances"] == len(list(send.rglob("*.dcm")))  # the liver SEG and the stray image too
    (sr,) = [d for d in got if d.Modality == "SR"]
    assert "no tumour ROI" not in _texts(sr) and "MVI" in sr.ContentDescription
    (study,) = detail["result"]["selection"]["studies"]
    roles = {s["series_instance_uid"]: s["role"] for s in study["series"] if s.get("role") == "ct_arterial"}
    assert list(roles) == [_role(entry, "ct_arterial")]  # the axial stack is still the arterial phase
    (record,) = [r for r in detail["result"]["inference"][0] if r["recipe"] == "ct_ap_resnet18"]
    assert record["roi_source"] == "seg"
    (finding,) = record["findings"]
    main_lesion = max(l["diameter_mm"] for l in entry["lesions"])
    liver = np.load(root / entry["truth"]["dir"] / "liver.npy") > 0
    spacing = float(arterial[0].PixelSpacing[1])
    liver_width = max(np.ptp(np.nonzero(sl.any(axis=0))[0]) for sl in liver if sl.any()) * spacing
    # the tumour's diameter (lobulated: a little over the drawn one), not the liver's
    assert 0.8 * main_lesion < finding["max_diameter_mm"] < 1.3 * main_lesion < 0.8 * liver_width, \
        (finding["max_diameter_mm"], main_lesion, liver_width)
