"""The MR segmenter liver_tumor_seg_mr (issue #11, "one model for MR"): an MR exam without an
outline gets its ROI from the MR model over DICOM, the SEG on the portal venous series,
`mvi-node segment` on MR, an annotated MR exam keeps its annotation, and the channels
(registered sequences, zeros for a missing one)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from conftest import storescu
from mvi_node.infer.registry import DEFAULT_ROOT, ModelRegistry
from mvi_node.synth import make_exam

NAME = "liver_tumor_seg_mr"
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
_served = ModelRegistry([DEFAULT_ROOT]).get(NAME)
SERVED = _served.version if _served is not None else None
pytestmark = pytest.mark.skipif(SERVED is None, reason="no liver_tumor_seg_mr model installed")
#: an MR exam without annotation whose lesion the reference model finds (gadoxetate, matrix 128)
AUTO_MR = dict(seed=4343, index=0, hard_cases="none", matrix=128, agent="gd-eob", annotations="none")


def _walk(ds):
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _walk(item)


def _texts(ds) -> str:
    return " ".join(str(i.TextValue) for i in _walk(ds) if i.ValueType == "TEXT")


def _dciodvfy_errors(path: Path) -> list[str]:
    from mvi_node.report.validate import dciodvfy_errors

    return dciodvfy_errors(path)


def _uid_of(manifest: dict, role: str) -> str:
    return next(uid for uid, r in manifest["series"].items() if r == role)


def _sops_of(folder: Path, series_uid: str) -> set[str]:
    out = set()
    for p in folder.rglob("*.dcm"):
        ds = dcmread(p, stop_before_pixels=True)
        if str(ds.SeriesInstanceUID) == series_uid:
            out.add(str(ds.SOPInstanceUID))
    return out


@pytest.fixture(scope="module")
def auto_mr(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("auto_mr") / "exam"
    return folder, make_exam(folder, "mr", **AUTO_MR)


def test_mr_exam_without_annotation_gets_the_mr_models_roi_sr_and_seg_over_dicom(node, pacs, auto_mr):
    import tomllib

    exam, manifest = auto_mr
    n = node(quiet=1.0, env=pacs.as_destination())
    storescu(n.port, exam / "dicom", extra=["-R"])
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        got = [dcmread(f, stop_before_pixels=True) for f in pacs.received()]
        if any(str(d.SOPClassUID) == SEG_CLASS for d in got) and any(d.Modality == "SR" for d in got):
            break
        time.sleep(0.5)
    time.sleep(1.0)
    results = {f: dcmread(f) for f in pacs.received()}
    srs = [d for d in results.values() if d.Modality == "SR"]
    segs = {f: d for f, d in results.items() if str(d.SOPClassUID) == SEG_CLASS}
    assert len(srs) == 1 and len(segs) == 1, [d.Modality for d in results.values()]
    text = _texts(srs[0])
    # the MR recipe ran on the MR model's ROI (not "no tumour ROI")
    assert f"ROI source: automatic: {NAME} {SERVED}" in text
    assert "Not evaluated" not in text
    assert "mr_3seq_grade" in {str(i.TextValue) for i in _walk(srs[0]) if i.ValueType == "TEXT"}
    [(seg_path, seg)] = segs.items()
    assert f"DICOM SEG {seg.SOPInstanceUID}" in text

    # the SEG: valid, in the source study, on the portal venous series, AUTOMATIC with the model's identity
    assert not _dciodvfy_errors(seg_path)
    portal = _uid_of(manifest, "mr_portal_venous")
    assert str(seg.StudyInstanceUID) in manifest["study_instance_uids"]
    assert [str(s.SeriesInstanceUID) for s in seg.ReferencedSeriesSequence] == [portal]
    refs = {str(r.ReferencedSOPInstanceUID) for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
    assert refs and refs <= _sops_of(exam / "dicom", portal)
    model = tomllib.loads((DEFAULT_ROOT / NAME / SERVED / "manifest.toml").read_text(encoding="utf-8"))
    labels = [str(s.SegmentLabel) for s in seg.SegmentSequence]
    assert labels[0] == "Liver" and labels[1].startswith("Lesion 1")
    for s in seg.SegmentSequence:
        assert s.SegmentAlgorithmType == "AUTOMATIC"
        algo = s.SegmentationAlgorithmIdentificationSequence[0]
        assert algo.AlgorithmName == NAME and algo.AlgorithmVersion == SERVED
        assert f"sha256={model['variants']['segmentation']['sha256']}" in str(algo.AlgorithmParameters)
    tracking = [str(i.UID) for i in _walk(srs[0]) if i.ValueType == "UIDREF"
                and i.ConceptNameCodeSequence[0].CodeValue == "112040"]
    assert str(seg.SegmentSequence[1].TrackingUID) in tracking
    for f in results:
        assert not _dciodvfy_errors(f), f


def test_segment_command_writes_an_mr_seg_on_the_portal_venous_series_and_finds_the_lesion(tmp_path, auto_mr):
    exam, manifest = auto_mr
    out = subprocess.run([sys.executable, "-m", "mvi_node", "segment", str(exam / "dicom"), "--out",
                          str(tmp_path / "segs"), "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    [rec] = json.loads(out.stdout)["exams"]
    assert rec["recipe"] == NAME and rec["roi_source"] == f"automatic: {NAME} {SERVED}" and rec["outcome"] == "ok"
    assert rec["series_instance_uid"] == _uid_of(manifest, "mr_portal_venous")
    channels = {c["role"]: c for c in rec["info"]["channels"]}
    assert list(channels) == ["mr_portal_venous", "mr_arterial", "mr_transitional", "mr_t2"]
    assert all(c["series_instance_uid"] == _uid_of(manifest, r) for r, c in channels.items())
    # the main lesion is the generator's largest one: its diameter within a third
    truth = max(les["diameter_mm"] for les in manifest["lesions"])
    main = rec["lesions"][0]
    assert abs(main["max_diameter_mm"] - truth) <= truth / 3, (main, truth)
    seg = Path(rec["seg"])
    assert seg.is_file() and not _dciodvfy_errors(seg)
    assert [str(s.SeriesInstanceUID) for s in dcmread(seg).ReferencedSeriesSequence] == [rec["series_instance_uid"]]


def test_annotated_mr_exam_still_uses_its_annotation_and_never_runs_the_mr_segmenter(tmp_path):
    from mvi_node.infer import Engine, ModelRegistry
    from mvi_node.report.outputs import build_results
    from mvi_node.select.engine import select_path

    make_exam(tmp_path / "seg", "mr", **{**AUTO_MR, "annotations": "seg", "seg_on": "portal"})
    engine = Engine(ModelRegistry([DEFAULT_ROOT]))
    assert NAME in [r.name for r, _m in engine.segmentation.segmenters]
    assert engine.segmentation.for_modality("MR")[0].name == NAME
    assert NAME not in engine.recipes.names()  # never offered an exam to predict on
    calls = []
    original = engine.segmentation.segment
    engine.segmentation.segment = lambda *a, **k: calls.append(1) or original(*a, **k)
    [exam] = select_path(tmp_path / "seg" / "dicom")
    [res] = [r for r in engine.run_exam(exam) if r.recipe == "mr_3seq_grade"]
    assert res.outcome == "ok" and res.roi["source"] == "seg" and res.segmentation is None and not calls
    datasets = build_results(res, exam, 0)
    assert "SR" in [d.Modality for d in datasets] and SEG_CLASS not in [str(d.SOPClassUID) for d in datasets]
    assert "ROI source: automatic" not in _texts(next(d for d in datasets if d.Modality == "SR"))


def test_a_missing_sequence_is_a_channel_of_zeros_and_another_frame_of_reference_is_registered(tmp_path, auto_mr):
    import pydicom
    from pydicom.uid import generate_uid

    from mvi_node.recipes.liver_tumor_seg_mr.recipe import LiverTumorSegMr
    from mvi_node.roi import series_geometry
    from mvi_node.select.engine import select_path

    exam, manifest = auto_mr
    folder = tmp_path / "exam"
    shutil.copytree(exam / "dicom", folder)
    t2, arterial = _uid_of(manifest, "mr_t2"), _uid_of(manifest, "mr_arterial")
    frame = generate_uid()
    for p in folder.rglob("*.dcm"):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        if str(ds.SeriesInstanceUID) == t2:
            p.unlink()
        elif str(ds.SeriesInstanceUID) == arterial:  # the arterial phase in its own frame of reference
            ds = pydicom.dcmread(p)
            ds.FrameOfReferenceUID = frame
            ds.save_as(p)
    [sel] = select_path(folder)
    winners = sel.winners()
    recipe = LiverTumorSegMr()
    target = series_geometry(list(winners["mr_portal_venous"].datasets))
    phases = {r: series_geometry(list(winners[r].datasets)) for r in recipe.channel_roles[1:] if r in winners}
    assert "mr_t2" not in phases and recipe.reads_phase(phases["mr_arterial"], target)
    x, info = recipe.channel_inputs(target, phases, 4)
    assert x.shape[0] == 4 and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    channels = {c["role"]: c for c in info["channels"]}
    assert not x[3].any() and channels["mr_t2"]["missing"] == "not in the exam"
    assert channels["mr_arterial"]["registered"] is True and "different frame of reference" in \
        channels["mr_arterial"]["registration"]
    # the registered arterial phase lines up with the target: it correlates in the body as the original does
    body = x[0] > 0.05
    assert np.corrcoef(x[0][body], x[1][body])[0, 1] > 0.3
    assert channels["mr_transitional"]["registered"] is False and x[2].any()
