"""Enhanced (multi-frame) MR and CT end to end (#12 item 2): every exam is written twice,
classic (one file per image) and with the hard case ``enhanced_multiframe`` (each image
series one Enhanced instance), and the node must treat both alike: frame views with the
classic geometry and pixels, the same selection, annotations that reference frames mapped
onto the right slices, the same CT probability with valid SR/SC outputs citing frames,
and an Enhanced MR exam received over a real association is staged and selected."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import run_cli_json, storescu
from mvi_node.common.frames import frame_datasets, frame_number, frame_parent, frame_pixels, view_key
from mvi_node.roi import Roi, find_roi, series_geometry
from mvi_node.select.engine import select_path
from mvi_node.synth import make_exam

pytestmark = pytest.mark.skipif(not Path("/usr/bin/dciodvfy").exists(), reason="dicom3tools not installed")


def _twins(root: Path, modality: str, seed: int, **choices) -> dict[str, tuple[dict, Path]]:
    """The classic and the Enhanced exam of one spec: {"classic"|"enhanced": (manifest entry, dicom dir)}."""
    out = {}
    for kind in ("classic", "enhanced"):
        entry = make_exam(root / kind, modality, seed=seed, index=0, hard_cases="none",
                          enhanced_multiframe=kind == "enhanced", **choices)
        out[kind] = (entry, root / kind / entry["dicom_dir"])
    return out


def _units(folder: Path) -> dict[str, object]:
    (exam,) = select_path(folder)
    return {u.uid: u for u in exam.units}


def _files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.dcm"))


@pytest.fixture(scope="module")
def mr_multiphase(tmp_path_factory) -> dict[str, tuple[dict, Path]]:
    """GE (phase offsets in TriggerTime) one-series dynamic exam, DWI with three b-values in
    one series, in/opposed phase in one series, reformats; SEG on the arterial phase."""
    return _twins(tmp_path_factory.mktemp("mr-mp"), "mr", 31, vendor="ge", agent="gd-eob", matrix=64,
                  multiphase_series=True, reformats=True, annotations="seg", seg_on="arterial")


def test_the_enhanced_exam_is_one_valid_instance_per_series(mr_multiphase):
    from mvi_node.report.validate import dciodvfy_errors

    (classic_entry, classic), (entry, enhanced) = mr_multiphase["classic"], mr_multiphase["enhanced"]
    images = [p for p in _files(enhanced) if pydicom.dcmread(p, stop_before_pixels=True).Modality == "MR"]
    assert len(images) == len(classic_entry["series"]) - 1  # one file per image series (the SEG aside)
    for path in images:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4.1" and int(ds.NumberOfFrames) > 1
        assert dciodvfy_errors(path) == [], path
    seg = next(p for p in _files(enhanced) if pydicom.dcmread(p, stop_before_pixels=True).Modality == "SEG")
    assert dciodvfy_errors(seg) == []


def test_frame_views_have_the_classic_geometry_parameters_and_pixels(mr_multiphase):
    classic, enhanced = _units(mr_multiphase["classic"][1]), _units(mr_multiphase["enhanced"][1])
    assert set(classic) == set(enhanced)
    images = [uid for uid, u in classic.items() if u.features["is_image"]]
    assert any("#" in uid for uid in images)  # the dynamic phases are units of one instance
    for uid in images:
        a, b = classic[uid], enhanced[uid]
        assert len({str(d.SOPInstanceUID) for d in b.datasets}) == 1 < len(b.datasets) == len(a.datasets), uid
        ga, gb = series_geometry(a.datasets), series_geometry(b.datasets)
        assert np.allclose(ga.positions, gb.positions) and np.allclose(ga.orientation, gb.orientation)
        assert ga.spacing_rc == gb.spacing_rc and ga.shape == gb.shape
        assert gb.sop_index == {view_key(d): i for i, d in enumerate(gb.datasets)}
        for da, db in zip(ga.datasets, gb.datasets):
            # frame i of the instance is classic instance i + 1
            assert frame_number(db) == int(da.InstanceNumber) and frame_parent(db) is not db
            for kw in ("EchoTime", "RepetitionTime", "FlipAngle", "DiffusionBValue", "TemporalPositionIdentifier",
                       "SliceThickness", "RescaleSlope", "RescaleIntercept"):
                if da.get(kw) is not None:
                    assert float(db.get(kw)) == pytest.approx(float(da.get(kw))), (uid, kw)
        for z in (0, len(ga.datasets) // 2, len(ga.datasets) - 1):
            assert np.array_equal(frame_pixels(ga.datasets[z]), frame_pixels(gb.datasets[z])), (uid, z)
        # GE keeps one AcquisitionTime and puts the phase offsets in TriggerTime; the
        # Enhanced frames carry their own acquisition time: the phase times agree
        fa, fb = a.features.get("acquisition_seconds"), b.features.get("acquisition_seconds")
        assert (fa is None) == (fb is None) and (fa is None or abs(fa - fb) < 0.01), uid
        # the injection time (Enhanced Contrast/Bolus profile) and so the delay after contrast
        assert a.features.get("bolus_start_seconds") == b.features.get("bolus_start_seconds"), uid
        da, db = a.features.get("delay_s"), b.features.get("delay_s")
        assert (da is None) == (db is None) and (da is None or abs(da - db) < 0.01), uid
        assert a.features.get("timing_basis") == b.features.get("timing_basis"), uid
        assert a.features.get("agent_class") == b.features.get("agent_class"), uid
    # a classic image, and any other object, passes through unchanged
    one = classic[images[0]].datasets[0]
    assert frame_datasets(one) == [one] and frame_number(one) is None


@pytest.mark.parametrize("choices", [
    # Philips, extracellular agent (T2 and DWI before contrast), an early arterial phase
    dict(vendor="philips", agent="extracellular", early_arterial=True),
    # Siemens Dixon maps (ImageType ...\\DIXON\\W) and inline subtractions: FrameType must say so too
    dict(vendor="siemens", agent="gd-eob", dixon=True, subtraction=True),
], ids=["philips-ecf", "siemens-dixon-sub"])
def test_selection_gives_the_enhanced_exam_the_roles_of_its_classic_twin(tmp_path, choices):
    twins = _twins(tmp_path, "mr", 47, matrix=64, **choices)
    classic, enhanced = _units(twins["classic"][1]), _units(twins["enhanced"][1])
    roles = {uid: (u.role, u.rule) for uid, u in classic.items()}
    assert {"mr_t1_pre", "mr_arterial", "mr_portal_venous"} <= {role for role, _rule in roles.values()}
    assert {uid: (u.role, u.rule) for uid, u in enhanced.items()} == roles  # same role, by the same rule


def test_selection_of_the_multiphase_instance_matches_too(mr_multiphase):
    classic, enhanced = _units(mr_multiphase["classic"][1]), _units(mr_multiphase["enhanced"][1])
    roles = {uid: u.role for uid, u in classic.items()}
    phases = {uid: role for uid, role in roles.items() if "#" in uid}
    assert {"mr_t1_pre", "mr_arterial", "mr_portal_venous", "mr_transitional"} <= set(phases.values())
    assert {uid: u.role for uid, u in enhanced.items()} == roles


def test_a_seg_referencing_frames_maps_onto_the_right_slices(mr_multiphase, tmp_path):
    """The SEG on the arterial phase of the one-instance dynamic series cites that phase's
    frames; the ROI lands on the same slices as the classic twin's, copied (not resampled),
    and follows the frame references: shift them by one and the mask shifts by one slice."""
    results = {}
    for kind in ("classic", "enhanced"):
        (exam,) = select_path(mr_multiphase[kind][1])
        arterial = exam.winners()["mr_arterial"]
        everything = [ds for u in exam.units for ds in u.datasets]
        results[kind] = (find_roi(everything, arterial.datasets), everything, arterial)
    (classic_roi, _, _), (roi, everything, arterial) = results["classic"], results["enhanced"]
    assert isinstance(roi, Roi) and roi.source == "seg" and not roi.mapped
    assert np.array_equal(roi.mask, classic_roi.mask) and roi.slices == classic_roi.slices
    seg_ds = next(d for d in everything if d.Modality == "SEG")
    seg = pydicom.dcmread(seg_ds.filename)
    cited = {int(s.ReferencedFrameNumber) for fg in seg.PerFrameFunctionalGroupsSequence
             for der in fg.DerivationImageSequence for s in der.SourceImageSequence}
    phase_frames = {frame_number(d) for d in arterial.datasets}
    assert cited and cited <= phase_frames  # only frames of the arterial phase, never another phase's
    # a SEG that cites the next frame of each slice puts the tumour one slice further
    shifted = pydicom.dcmread(seg_ds.filename)
    for fg in shifted.PerFrameFunctionalGroupsSequence:
        for der in fg.DerivationImageSequence:
            for s in der.SourceImageSequence:
                s.ReferencedFrameNumber = int(s.ReferencedFrameNumber) + 1
    shifted.save_as(tmp_path / "shifted.dcm")
    shifted = pydicom.dcmread(tmp_path / "shifted.dcm", stop_before_pixels=True)
    moved = find_roi([d for d in everything if d.Modality != "SEG"] + [shifted], arterial.datasets)
    geo = series_geometry(arterial.datasets)
    direction = frame_number(geo.datasets[1]) - frame_number(geo.datasets[0])  # frames run up or down the stack
    assert abs(direction) == 1 and isinstance(moved, Roi) and not moved.mapped
    assert np.array_equal(moved.mask, np.roll(roi.mask, direction, axis=0))


@pytest.mark.parametrize("annotations", ["sr", "circle"])
def test_sr_and_gsps_regions_on_frames_map_like_the_classic_twin(tmp_path, annotations):
    twins = _twins(tmp_path, "ct", 23, mvi=True, matrix=96, annotations=annotations)
    rois = {}
    for kind in ("classic", "enhanced"):
        (exam,) = select_path(twins[kind][1])
        target = exam.winners()["ct_arterial"]
        rois[kind] = find_roi([ds for u in exam.units for ds in u.datasets], target.datasets)
    a, b = rois["classic"], rois["enhanced"]
    assert isinstance(b, Roi) and b.source == a.source and not b.mapped and b.kind == a.kind
    assert b.slices == a.slices and np.array_equal(b.mask, a.mask)


def _sr_images(sr) -> list[tuple[str, int | None]]:
    out = []

    def walk(items):
        for it in items:
            if it.ValueType == "IMAGE":
                ref = it.ReferencedSOPSequence[0]
                out.append((str(ref.ReferencedSOPInstanceUID), ref.get("ReferencedFrameNumber")))
            walk(it.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return out


def test_an_enhanced_ct_exam_runs_through_infer_like_its_classic_twin(tmp_path):
    from mvi_node.clinical import NullClinicalSource
    from mvi_node.infer import Engine, ModelRegistry
    from mvi_node.infer.registry import DEFAULT_ROOT
    from mvi_node.report.outputs import build_results
    from mvi_node.report.validate import dciodvfy_errors

    twins = _twins(tmp_path, "ct", 29, mvi=True, matrix=96, annotations="seg")
    for path in _files(twins["enhanced"][1]):
        assert dciodvfy_errors(path) == [], path  # Enhanced CT instances, the SEG citing frames
    (cli,) = json.loads(run_cli_json(["infer", str(twins["enhanced"][1]), "--json"]))["studies"]
    assert cli["recipe"] == "ct_ap_resnet18" and cli["outcome"] == "ok"
    assert cli["roi"]["source"] == "seg" and not cli["roi"]["mapped_from_other_series"]
    assert cli["slices"] and all(s.get("frame_number") for s in cli["gradcam"]["slices"])  # (SOP, frame)
    # the classic twin in process (one model load), then the report of both: SR and
    # captures valid, citing (SOP, frame) where the classic twin cites instances
    engine = Engine(ModelRegistry([DEFAULT_ROOT], pins={"liver_tumor_seg": "none"}), NullClinicalSource())
    cited = {}
    for kind, (_e, folder) in twins.items():
        (exam,) = select_path(folder)
        (res,) = [r for r in engine.run_exam(exam) if r.recipe == "ct_ap_resnet18"]
        assert abs(res.probability - cli["probability"]) < 1e-4, kind  # the same probability as the CLI's
        sr, *captures = build_results(res, exam, 2)
        assert [c.Modality for c in captures] == ["OT", "OT"]
        for i, ds in enumerate([sr, *captures]):
            path = tmp_path / f"{kind}-{i}.dcm"
            ds.save_as(path, enforce_file_format=True)
            assert dciodvfy_errors(path) == [], (kind, i)
        numbers = {str(d.SOPInstanceUID): int(d.InstanceNumber) for u in exam.units for d in u.datasets
                   if frame_number(d) is None and "InstanceNumber" in d}
        refs = _sr_images(sr)
        sources = [c.SourceImageSequence[0] for c in captures]
        if kind == "classic":
            cited[kind] = (sorted(numbers[s] for s, _f in refs), sorted(numbers[str(s.ReferencedSOPInstanceUID)]
                                                                         for s in sources))
        else:
            assert len({s for s, _f in refs}) == 1 and all(f is not None for _s, f in refs)
            assert all("ReferencedFrameNumber" in s for s in sources)
            assert len({str(c.SOPInstanceUID) for c in captures}) == len(captures)
            cited[kind] = (sorted(int(f) for _s, f in refs), sorted(int(s.ReferencedFrameNumber) for s in sources))
    assert cited["enhanced"] == cited["classic"]  # frame k cited where the classic SR cites instance k


def test_an_enhanced_mr_exam_sent_over_dicom_is_staged_and_selected(node, tmp_path, mr_multiphase):
    import httpx

    classic_entry, classic = mr_multiphase["classic"]
    _entry, enhanced = mr_multiphase["enhanced"]
    n = node(quiet=1.0, env={"MVI_MODELS__PINS": json.dumps({"liver_tumor_seg": "none"})})
    sent = storescu(n.port, enhanced, extra=["-R"])
    assert sent.returncode == 0, sent.stderr[-2000:]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not [j for j in n.status_jobs() if j["state"] in ("done", "failed")]:
        time.sleep(0.25)
    (job,) = [j for j in n.status_jobs() if j["kind"] == "study"]
    assert job["state"] == "done", job
    assert n.status()["instances"] == len(_files(enhanced))  # every instance staged
    detail = httpx.get(f"http://127.0.0.1:{n.admin_port}/jobs/{job['id']}", timeout=10).json()
    (study,) = detail["result"]["selection"]["studies"]
    roles = {s["series_instance_uid"]: s["role"] for s in study["series"]}
    assert roles == {uid: u.role for uid, u in _units(classic).items()}
    assert roles[next(u for u in roles if u.endswith("#2"))] == "mr_arterial"
    # and the exam gets its results (without a served MR model: an SR saying why no recipe ran), valid
    from mvi_node.report.validate import dciodvfy_errors

    results = [r for group in detail["result"]["inference"] for r in group]
    sr_files = [Path(f) for r in results for f in r["outputs"]["files"]]
    assert sr_files and all(dciodvfy_errors(f) == [] for f in sr_files)
    assert {str(pydicom.dcmread(f).StudyInstanceUID) for f in sr_files} == set(classic_entry["study_instance_uids"])


def _item(**kw) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


def test_legacy_converted_groups_flatten_and_frames_are_read_once(tmp_path):
    """Legacy Converted Enhanced MR keeps classic attributes in the Unassigned Converted
    Attributes groups; MR Modifier inversion times, cardiac trigger delay, frame times and
    temporal positions come through under their classic names; a frame's pixels come from
    its file, decoded once for all frames."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4.4", generate_uid()
    ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.Modality = generate_uid(), generate_uid(), "MR"
    ds.Rows, ds.Columns, ds.NumberOfFrames = 4, 5, 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.SharedFunctionalGroupsSequence = [_item(
        PlaneOrientationSequence=[_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])],
        PixelMeasuresSequence=[_item(PixelSpacing=[0.8, 0.9], SliceThickness=3.0)],
        MRModifierSequence=[_item(InversionTimes=[300.0])],
        UnassignedSharedConvertedAttributesSequence=[_item(RepetitionTime=5.0, ScanningSequence="GR",
                                                           SequenceName="*fl3d1")])]
    ds.PerFrameFunctionalGroupsSequence = [_item(
        PlanePositionSequence=[_item(ImagePositionPatient=[0, 0, 3.0 * k])],
        FrameContentSequence=[_item(FrameAcquisitionDateTime=f"2025010609{30 + k}00.5", TemporalPositionIndex=k + 1,
                                    StackID="1", InStackPositionNumber=k + 1)],
        CardiacSynchronizationSequence=[_item(NominalCardiacTriggerDelayTime=120.0 * k)],
        MREchoSequence=[_item(EffectiveEchoTime=2.3 * (k + 1))],
        UnassignedPerFrameConvertedAttributesSequence=[_item(ContentTime=f"0930{k}0")]) for k in range(2)]
    pixels = np.arange(2 * 4 * 5, dtype=np.uint16).reshape(2, 4, 5)
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    path = tmp_path / "legacy.dcm"
    ds.save_as(path, enforce_file_format=True)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    first, second = frame_datasets(header)
    assert [frame_number(first), frame_number(second)] == [1, 2] and frame_parent(second) is header
    assert first.SOPInstanceUID == second.SOPInstanceUID == ds.SOPInstanceUID and "NumberOfFrames" not in second
    assert "PerFrameFunctionalGroupsSequence" not in second and second.filename == str(path)
    assert [float(v) for v in second.ImagePositionPatient] == [0, 0, 3.0] and float(second.SliceThickness) == 3.0
    assert float(second.EchoTime) == pytest.approx(4.6) and float(first.EchoTime) == pytest.approx(2.3)
    assert float(second.RepetitionTime) == 5.0 and second.ScanningSequence == "GR" and second.SequenceName == "*fl3d1"
    assert float(second.InversionTime) == 300.0 and float(second.TriggerTime) == 120.0
    assert int(second.TemporalPositionIdentifier) == 2 and second.ContentTime == "093010"
    assert second.AcquisitionTime == "093100.5" and second.AcquisitionDate == "20250106"
    assert np.array_equal(frame_pixels(second), pixels[1]) and np.array_equal(frame_pixels(first), pixels[0])
    assert frame_pixels(first).base is frame_pixels(second).base  # one decode of the file serves both frames
    assert np.array_equal(frame_pixels(pydicom.dcmread(path)), pixels)  # a dataset with pixels: its own array


def test_frames_of_a_compressed_enhanced_instance_read_the_same(mr_multiphase, tmp_path):
    """PACS may route an Enhanced instance RLE- (or JPEG-) compressed; frames decode the same."""
    from pydicom.uid import RLELossless

    path = max(_files(mr_multiphase["enhanced"][1]), key=lambda p: p.stat().st_size)  # the dynamic series
    ds = pydicom.dcmread(path)
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm", enforce_file_format=True)
    plain = frame_datasets(pydicom.dcmread(path, stop_before_pixels=True))
    packed = frame_datasets(pydicom.dcmread(tmp_path / "rle.dcm", stop_before_pixels=True))
    assert len(packed) == len(plain) == int(ds.NumberOfFrames) > 100
    for k in (0, len(plain) // 2, len(plain) - 1):
        assert np.array_equal(frame_pixels(packed[k]), frame_pixels(plain[k]))


def test_an_instance_with_two_stacks_becomes_two_units():
    """An Enhanced instance holding an axial stack and a coronal one (Stack IDs 1 and 2)
    gives the axial stack as the series' unit and the coronal one as a unit of its own, as
    a classic series with a stray coronal stack does."""
    from pydicom.uid import generate_uid

    from mvi_node.select.series import build_units

    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4.1", generate_uid()
    ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.Modality = generate_uid(), generate_uid(), "MR"
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.InstanceNumber = 8, 8, 7, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.SharedFunctionalGroupsSequence = [_item(PixelMeasuresSequence=[_item(PixelSpacing=[1, 1], SliceThickness=2.0)],
                                               MRImageFrameTypeSequence=[_item(FrameType=ds.ImageType)])]
    axial, coronal = [1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, -1]
    ds.PerFrameFunctionalGroupsSequence = [_item(
        PlaneOrientationSequence=[_item(ImageOrientationPatient=axial if k < 5 else coronal)],
        PlanePositionSequence=[_item(ImagePositionPatient=[0, 0, 2.0 * k] if k < 5 else [0, 3.0 * k, 0])],
        FrameContentSequence=[_item(StackID="1" if k < 5 else "2", InStackPositionNumber=k + 1 if k < 5 else k - 4)])
        for k in range(7)]
    units = {u.uid: u for u in build_units([ds])}
    main, stray = units[str(ds.SeriesInstanceUID)], units[f"{ds.SeriesInstanceUID}~1"]
    assert (len(main.datasets), main.features["orientation"]) == (5, "axial")
    assert (len(stray.datasets), stray.features["orientation"]) == (2, "coronal")
    assert [frame_number(d) for d in stray.datasets] == [6, 7]
    assert main.features["distinct_positions"] == 5 and main.features["coverage_mm"] == pytest.approx(10.0)


class _FixedRunner:
    """A stand-in for a served mr_3seq_grade model (none ships yet): fixed grade
    probabilities and a Grad-CAM map per branch, so the twins' reports can be compared."""

    variants = {"grade": None}

    def run(self, variant, feeds, outputs, batched=()):
        maps = np.stack([np.clip(feeds[n][0, 1] / 255.0, 0, 1) for n in ("t1_pre", "portal_venous", "transitional")])
        return [np.asarray([[0.2, 0.5, 0.3]], np.float32), np.asarray([0.8], np.float32), maps[None]]

    def threshold(self, variant):
        return 0.5

    def calibrate(self, variant, p):
        return p


def test_an_enhanced_mr_exam_is_processed_by_mr_3seq_grade_like_its_classic_twin(tmp_path, mr_multiphase):
    """Selection, ROI, the shared MR preprocessing and the recipe's crops give the Enhanced
    exam (its three inputs: phases of one instance) exactly the classic twin's inputs; its
    SR and one capture per sequence validate and cite (SOP, frame) where the classic ones
    cite instances."""
    recipe_module = pytest.importorskip("mvi_node.recipes.mr_3seq_grade.recipe")
    from mvi_node.clinical import NullClinicalSource
    from mvi_node.concepts import MR_PROCEDURE
    from mvi_node.infer.engine import RecipeResult
    from mvi_node.infer.recipe import ExamInputs
    from mvi_node.report.outputs import build_results
    from mvi_node.report.validate import dciodvfy_errors

    twins = mr_multiphase
    recipe = recipe_module.Mr3SeqGrade()
    prepared, cited = {}, {}
    for kind, (entry, folder) in twins.items():
        (exam,) = select_path(folder)
        winners = exam.winners()
        inputs = ExamInputs(series={role: tuple(winners[role].datasets) for role in recipe.requires},
                            exam=tuple(d for u in exam.units for d in u.datasets), clinical=NullClinicalSource())
        prepared[kind] = p = recipe.prepare(inputs)
        assert isinstance(p, recipe_module.Prepared), getattr(p, "reasons", p)
        prediction = recipe.predict(p, _FixedRunner())
        res = RecipeResult(recipe=recipe.name, patient_id=entry["patient_id"],
                           study_instance_uids=tuple(entry["study_instance_uids"]),
                           model={"recipe": recipe.name, "model_version": "0.0.0-test", "sha256": "0" * 64,
                                  "training_data": "synthetic", "intended_use": "tests only"},
                           procedure=MR_PROCEDURE, endpoint=recipe.endpoint, prediction=prediction)
        sr, *captures = build_results(res, exam, 3)
        assert len(captures) == 3  # one per sequence
        for i, ds in enumerate([sr, *captures]):
            ds.save_as(tmp_path / f"{kind}-{i}.dcm", enforce_file_format=True)
            assert dciodvfy_errors(tmp_path / f"{kind}-{i}.dcm") == [], (kind, i)
        number = {str(d.SOPInstanceUID): int(d.InstanceNumber) for u in exam.units for d in u.datasets
                  if "InstanceNumber" in d}
        refs = [c.SourceImageSequence[0] for c in captures]
        if kind == "classic":
            cited[kind] = sorted(number[str(r.ReferencedSOPInstanceUID)] for r in refs)
        else:
            cited[kind] = sorted(int(r.ReferencedFrameNumber) for r in refs)
            assert all(f is not None for f in p.key_frames.values())
    a, b = prepared["classic"], prepared["enhanced"]
    assert a.slices == b.slices and a.box.as_dict() == b.box.as_dict()
    for name in a.images:
        assert np.array_equal(a.images[name], b.images[name]), name
    assert cited["enhanced"] == cited["classic"]  # frame k where the classic captures cite instance k


def _served(recipe: str) -> bool:
    from mvi_node.infer.registry import DEFAULT_ROOT

    return any((Path(DEFAULT_ROOT) / recipe).glob("*/manifest.toml"))


@pytest.mark.skipif(not _served("mr_3seq_grade"), reason="no mr_3seq_grade model installed")
def test_an_enhanced_mr_exam_runs_through_infer_with_its_classic_twins_probability(tmp_path):
    from mvi_node.clinical import NullClinicalSource
    from mvi_node.infer import Engine, ModelRegistry
    from mvi_node.infer.registry import DEFAULT_ROOT

    twins = _twins(tmp_path, "mr", 4242, matrix=128, agent="gd-eob", mvi=True, annotations="seg", seg_on="portal")
    (cli,) = [r for r in json.loads(run_cli_json(["infer", str(twins["enhanced"][1]), "--json"]))["studies"]
              if r["recipe"] == "mr_3seq_grade"]
    assert cli["outcome"] == "ok" and cli["slices"] == 3  # a key slice per sequence
    assert all(s.get("frame_number") for s in cli["gradcam"]["slices"])  # each cited as (SOP, frame)
    engine = Engine(ModelRegistry([DEFAULT_ROOT], pins={"liver_tumor_seg": "none"}), NullClinicalSource())
    (exam,) = select_path(twins["classic"][1])
    (res,) = [r for r in engine.run_exam(exam) if r.recipe == "mr_3seq_grade"]
    assert abs(res.probability - cli["probability"]) < 1e-4


def test_a_seg_over_frames_of_two_instances_cites_each_frame(mr_multiphase, tmp_path):
    """A series written as two Enhanced instances (half the slab each): a SEG over its
    frames validates, cites (SOP, frame) per SEG frame and both instances, and maps back
    onto exactly those frames."""
    import copy

    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    from mvi_node.common.frames import cite_source_frames, seg_source_arguments
    from mvi_node.report.validate import dciodvfy_errors
    from mvi_node.select.series import build_units

    (exam,) = select_path(mr_multiphase["enhanced"][1])
    hbp = exam.winners()["mr_hepatobiliary"]
    whole = pydicom.dcmread(hbp.datasets[0].filename)
    n = int(whole.NumberOfFrames)
    headers = []
    for k, (a, b) in enumerate(((0, n // 2), (n // 2, n))):
        part = copy.deepcopy(whole)
        part.SOPInstanceUID = part.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        part.PerFrameFunctionalGroupsSequence = whole.PerFrameFunctionalGroupsSequence[a:b]
        part.NumberOfFrames, part.InstanceNumber = b - a, k + 1
        part.PixelData = whole.pixel_array[a:b].tobytes()
        part.save_as(tmp_path / f"part{k}.dcm", enforce_file_format=True)
        headers.append(pydicom.dcmread(tmp_path / f"part{k}.dcm", stop_before_pixels=True))
    (unit,) = build_units(headers)
    geo = series_geometry(unit.datasets)
    mask = np.zeros(geo.shape, np.uint8)
    mask[n // 2 - 3:n // 2 + 3, 20:30, 25:40] = 1  # across the two instances
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="Tumor", segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        **seg_source_arguments(geo.datasets, mask), segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment], series_instance_uid=generate_uid(), series_number=300,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="test", manufacturer_model_name="test",
        software_versions="1", device_serial_number="1")
    cite_source_frames(seg, geo.datasets)
    seg.save_as(tmp_path / "seg.dcm", enforce_file_format=True)
    assert dciodvfy_errors(tmp_path / "seg.dcm") == []
    cited = {(str(s.ReferencedSOPInstanceUID), int(s.ReferencedFrameNumber))
             for fg in seg.PerFrameFunctionalGroupsSequence for d in fg.DerivationImageSequence
             for s in d.SourceImageSequence}
    drawn = {(str(geo.datasets[z].SOPInstanceUID), frame_number(geo.datasets[z])) for z in np.flatnonzero(mask.any((1, 2)))}
    assert cited == drawn and len({sop for sop, _f in cited}) == 2
    listed = {str(r.ReferencedSOPInstanceUID) for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert listed == {str(h.SOPInstanceUID) for h in headers}
    roi = find_roi([*unit.datasets, pydicom.dcmread(tmp_path / "seg.dcm", stop_before_pixels=True)], geo)
    assert isinstance(roi, Roi) and not roi.mapped and np.array_equal(roi.mask, mask.astype(bool))
