"""Shared MR preprocessing (#12 item 1): N4, 0..255, rigid registration, resampling.

Volumes come from the MR phantom (``simulate_mr``); series are real DICOM datasets (in
memory with PixelData, or a whole exam written to disk and read header-only).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from prometheus_client import REGISTRY
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from mvi_node.preprocess import bias, intensity, register as reg
from mvi_node.preprocess.mr import PREPROCESSING_CONSTANTS, MRPreprocessError, MRVolumes, prepare_mr
from mvi_node.preprocess.resample import image_like
from mvi_node.preprocess.volume import load_volume
from mvi_node.synth.anatomy import L
from mvi_node.synth.exam import write_exam
from mvi_node.synth.mr import simulate_mr
from mvi_node.synth.spec import draw_spec

SPEC = dict(hard_cases="none", vendor="siemens", annotations="none")


@pytest.fixture(scope="module")
def sim():
    return simulate_mr(draw_spec("mr", 7, 0, matrix=128, **SPEC))


def phantom_image(sim, phase: str) -> sitk.Image:
    """A phase as an image in patient coordinates, slices ascending along +z (as DICOM sorts)."""
    g = sim.grid
    image = sitk.GetImageFromArray(np.ascontiguousarray(sim.volumes[phase][::-1], np.float32))
    image.SetSpacing((g.pixel_spacing[1], g.pixel_spacing[0], g.thickness))
    image.SetOrigin((float(g.xs[0]), float(g.ys[0]), float(g.zs[-1])))
    return image


def grey(image: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    corrected, mask, _ = bias.n4_correct(image)
    values = sitk.GetArrayFromImage(corrected)
    lo, hi = intensity.robust_range(values, sitk.GetArrayFromImage(mask))
    return image_like(intensity.to_grey(values, lo, hi), corrected), mask


def datasets_of(image: sitk.Image, *, frame_uid: str, study_uid: str, slope: float = 1.0,
                intercept: float = 0.0) -> list[Dataset]:
    """Single-frame MR images of ``image``'s grid (any direction), PixelData in memory."""
    values = sitk.GetArrayFromImage(image)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    sx, sy, _ = image.GetSpacing()
    series_uid = generate_uid()
    out = []
    for k in range(values.shape[0]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, generate_uid()
        ds.Modality = "MR"
        ds.PatientID, ds.PatientName, ds.AccessionNumber = "PID-SECRET-42", "Secret^Patient", "ACC-SECRET-7"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [round(float(v), 6) for v in (*direction[:, 0], *direction[:, 1])]
        ds.ImagePositionPatient = [round(float(v), 4) for v in image.TransformIndexToPhysicalPoint((0, 0, k))]
        ds.PixelSpacing = [round(sy, 6), round(sx, 6)]
        ds.Rows, ds.Columns = values.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        stored = np.clip(np.round((values[k] - intercept) / slope), 0, 65535).astype(np.uint16)
        ds.PixelData = stored.tobytes()
        out.append(ds)
    return out[::-1]  # sorting is the loader's job


def test_n4_removes_a_synthetic_bias_field(sim):
    """A strong smooth field (about x2.5 across the body) on the portal phase raises the
    coefficient of variation inside the liver 1.8x or more over the phantom's own (noise,
    texture, its mild coil field); N4 brings it down by at least 1.8x, to no more than
    the phantom's own, and the field it removed correlates with the one added."""
    image = phantom_image(sim, "portal")
    liver = sim.labels[::-1] == int(L.LIVER)
    z, y, x = np.meshgrid(sim.grid.zs[::-1], sim.grid.ys, sim.grid.xs, indexing="ij")
    true_log = (0.35 * x / 150 - 0.25 * y / 150 + 0.2 * (z / 100) ** 2).astype(np.float32)
    biased = image_like(sitk.GetArrayFromImage(image) * np.exp(true_log), image)

    def cv(img: sitk.Image) -> float:
        v = sitk.GetArrayFromImage(img)[liver]
        return float(v.std() / v.mean())

    cpu = time.process_time()
    corrected, mask, info = bias.n4_correct(biased)
    cpu = time.process_time() - cpu
    assert cv(biased) > 1.8 * cv(image)  # the field dominates the liver's variation
    assert cv(corrected) < cv(biased) / 1.8
    assert cv(corrected) < 1.05 * cv(image)
    removed = sitk.GetArrayFromImage(bias.log_bias_field(biased, corrected))
    body = sitk.GetArrayFromImage(mask).astype(bool)
    assert np.corrcoef(removed[body], true_log[body])[0, 1] > 0.85
    assert info["shrink"] == bias.shrink_factors(biased) and all(f > 1 for f in info["shrink"])
    assert cpu < 5.0  # well under a second of CPU on this machine; the bound only catches a blow-up


def test_intensity_map_uses_robust_percentiles():
    rng = np.random.default_rng(3)
    values = rng.normal(500, 50, (4, 32, 32)).astype(np.float32)
    values[0, 0, 0] = 1e6  # one hot voxel must not squeeze the rest
    mask = np.ones(values.shape, bool)
    lo, hi = intensity.robust_range(values, mask)
    assert 300 < lo < 400 and 600 < hi < 700
    out = intensity.to_grey(values, lo, hi)
    assert out.dtype == np.float32 and out.min() == 0 and out.max() == 255
    assert 100 < float(np.median(out)) < 155
    with pytest.raises(ValueError):
        intensity.robust_range(np.full((2, 4, 4), 7.0), None)


def _euler(rotation_deg, translation, centre) -> sitk.Euler3DTransform:
    return sitk.Euler3DTransform(centre, *np.radians(rotation_deg), translation)


def test_registration_recovers_a_known_shift_and_rotation(sim):
    """T1 pre moved by a known rigid transform is brought back onto the portal phase within
    1 mm and 1 deg (multi-contrast: mutual information, not intensity identity)."""
    fixed, mask = grey(phantom_image(sim, "portal"))
    pre, _ = grey(phantom_image(sim, "pre"))
    centre = reg.centre_of(fixed)
    true = _euler((2.0, -1.5, 4.0), (4.0, -3.0, 5.0), centre)
    moving = sitk.Resample(pre, fixed, true, sitk.sitkLinear, 0.0)  # moving(x) = pre(true(x))
    found, result = reg.register(fixed, mask, moving)
    assert result.performed and result.passed, result.reason
    assert result.metric_after > result.metric_before + 0.05
    # found must undo true: true(found(x)) = x for every point of the body
    body = np.argwhere(sitk.GetArrayFromImage(mask) > 0)[::97]
    points = [fixed.TransformIndexToPhysicalPoint([int(i) for i in idx[::-1]]) for idx in body]
    error = max(np.linalg.norm(np.subtract(true.TransformPoint(found.TransformPoint(p)), p)) for p in points)
    assert error < 1.0, f"residual {error:.2f} mm"
    composed = np.asarray(true.GetMatrix()).reshape(3, 3) @ np.asarray(found.GetMatrix()).reshape(3, 3)
    angle = np.degrees(np.arccos(np.clip((np.trace(composed) - 1) / 2, -1, 1)))
    assert angle < 1.0, f"residual rotation {angle:.2f} deg"
    # and the reported parameters are those of the inverse motion (same centre)
    inverse = _euler((0, 0, 0), (0, 0, 0), centre)
    inverse.SetMatrix(np.linalg.inv(np.asarray(true.GetMatrix()).reshape(3, 3)).flatten())
    inverse.SetTranslation(true.GetInverse().TransformPoint(centre) - np.asarray(centre))
    assert np.allclose(result.translation_mm, inverse.GetTranslation(), atol=1.0)
    assert np.allclose(result.rotation_deg, np.degrees([inverse.GetAngleX(), inverse.GetAngleY(),
                                                        inverse.GetAngleZ()]), atol=1.0)


def test_registration_to_an_unrelated_image_fails_its_quality_check(sim):
    fixed, mask = grey(phantom_image(sim, "portal"))
    rng = np.random.default_rng(0)
    noise = sitk.SmoothingRecursiveGaussian(image_like(rng.random(fixed.GetSize()[::-1]), fixed), 6.0)
    values = sitk.GetArrayFromImage(noise)
    unrelated = image_like(intensity.to_grey(values, *np.percentile(values, [1, 99])), fixed)
    _, result = reg.register(fixed, mask, unrelated)
    assert result.performed and not result.passed
    assert result.metric_after < reg.MIN_NMI and "does not match" in result.reason


def test_other_frame_orientation_and_slice_count_land_on_the_reference_grid(sim):
    """The portal phase written twice: the reference (axial, 128 x 128 x 67) and a copy in
    another frame of reference, on oblique planes (turned 25 deg), 2.2 mm pixels, 5 mm
    slices, shifted by a known 6 mm, stored with RescaleSlope/Intercept. ``auto``
    registers it (frames differ), finds the shift, and the result matches the reference
    voxel by voxel; ``never`` trusts the wrong geometry and leaves the shift in."""
    image = phantom_image(sim, "portal")
    study = generate_uid()
    ref = datasets_of(image, frame_uid=generate_uid(), study_uid=study)
    oblique = sitk.Image([150, 150, 36], sitk.sitkFloat32)
    oblique.SetSpacing((2.2, 2.2, 5.0))
    turn = _euler((0.0, 0.0, 25.0), (0, 0, 0), (0, 0, 0))
    oblique.SetDirection(turn.GetMatrix())
    centre = np.asarray(reg.centre_of(image))
    oblique.SetOrigin(tuple(centre - np.asarray(turn.GetMatrix()).reshape(3, 3) @ (np.array([149, 149, 35]) * [1.1, 1.1, 2.5])))
    shift = np.array([6.0, 0.0, 0.0])
    # the copy's content sits 6 mm further along +x in its (wrong) patient coordinates
    moved = sitk.Resample(image, oblique, sitk.TranslationTransform(3, tuple(-shift)), sitk.sitkLinear, 0.0)
    other = datasets_of(moved, frame_uid=generate_uid(), study_uid=study, slope=0.5, intercept=-20.0)

    vols = prepare_mr({"mr_portal_venous": ref, "mr_copy": other}, "mr_portal_venous", n4=False)
    assert isinstance(vols, MRVolumes) and vols.geometry.shape == sim.volumes["portal"].shape
    assert vols.arrays["mr_copy"].shape == vols.arrays["mr_portal_venous"].shape == vols.geometry.shape
    result = vols.registration["mr_copy"]
    assert result.performed and result.passed and "different frame of reference" in result.reason
    assert np.allclose(result.translation_mm, shift, atol=1.0), result.translation_mm
    assert max(abs(a) for a in result.rotation_deg) < 1.0
    a, b = vols.arrays["mr_portal_venous"], vols.arrays["mr_copy"]
    inside = vols.body_mask & vols.coverage["mr_copy"]
    assert inside.sum() > 0.8 * vols.body_mask.sum()
    assert not b[~vols.coverage["mr_copy"]].any()  # outside its field of view: 0, never data
    assert np.corrcoef(a[inside], b[inside])[0, 1] > 0.95
    trusted = prepare_mr({"mr_portal_venous": ref, "mr_copy": other}, "mr_portal_venous", n4=False,
                         register="never")
    c = trusted.arrays["mr_copy"]
    assert not trusted.registration["mr_copy"].performed
    assert np.corrcoef(a[inside], c[inside])[0, 1] < np.corrcoef(a[inside], b[inside])[0, 1] - 0.02


def test_coverage_says_which_reference_slices_a_shorter_sequence_lacks(sim):
    image = phantom_image(sim, "pre")
    full = datasets_of(image, frame_uid="1.2.3", study_uid="1.2.4")[::-1]  # ascending z
    part = datasets_of(image, frame_uid="1.2.3", study_uid="1.2.4")[::-1][20:45]
    vols = prepare_mr({"mr_t1_pre": full, "mr_part": part}, "mr_t1_pre", n4=False)
    per_slice = vols.slice_coverage("mr_part")
    body_slices = vols.body_mask.any(axis=(1, 2))
    assert np.all(per_slice[20:45] > 0.99)
    assert np.all(per_slice[:19][body_slices[:19]] == 0) and np.all(per_slice[46:][body_slices[46:]] == 0)
    assert not vols.arrays["mr_part"][:19].any() and vols.arrays["mr_part"][25:40].any()
    assert 0.2 < vols.record()["coverage"]["mr_part"] < 0.6 and vols.record()["coverage"]["mr_t1_pre"] == 1.0


def test_load_sorts_slices_and_applies_rescale(sim):
    image = phantom_image(sim, "pre")
    dss = datasets_of(image, frame_uid="1.2.3", study_uid="1.2.4", slope=2.0, intercept=-100.0)
    loaded, geo = load_volume(dss)
    assert geo.shape == sitk.GetArrayFromImage(image).shape
    assert np.allclose(loaded.GetOrigin(), image.GetOrigin(), atol=1e-3)
    assert np.abs(sitk.GetArrayFromImage(loaded) - sitk.GetArrayFromImage(image)).max() <= 1.0 + 1e-3


def test_unusable_series_raise_with_the_role_and_no_patient_data(sim):
    image = phantom_image(sim, "pre")
    good = datasets_of(image, frame_uid="1.2.3", study_uid="1.2.4")
    no_geometry = datasets_of(image, frame_uid="1.2.3", study_uid="1.2.4")
    for ds in no_geometry:
        del ds.ImageOrientationPatient
    duplicated = good[:10] + datasets_of(image, frame_uid="1.2.3", study_uid="1.2.4")[:10]  # two b-values
    cases = {"mr_empty": ([], "no images"), "mr_bare": (no_geometry, "ImageOrientationPatient"),
             "mr_dwi": (duplicated, "more than one image at one slice position")}
    for role, (dss, words) in cases.items():
        with pytest.raises(MRPreprocessError) as err:
            prepare_mr({"mr_t1_pre": good, role: dss}, "mr_t1_pre", n4=False)
        assert role in str(err.value) and words in str(err.value) and err.value.role == role
        assert "SECRET" not in str(err.value)
    flat = datasets_of(image_like(np.full(image.GetSize()[::-1], 300.0), image), frame_uid="1.2.3",
                       study_uid="1.2.4")
    for n4 in (False, True):
        with pytest.raises(MRPreprocessError, match="mr_flat: ") as err:
            prepare_mr({"mr_flat": flat, "mr_t1_pre": good}, "mr_t1_pre", n4=n4)
        assert err.value.role == "mr_flat"
    with pytest.raises(MRPreprocessError, match="reference sequence mr_portal_venous is missing"):
        prepare_mr({"mr_t1_pre": good}, "mr_portal_venous")
    rng = np.random.default_rng(1)
    noise = sitk.SmoothingRecursiveGaussian(image_like(rng.random(image.GetSize()[::-1]) * 500, image), 6.0)
    unrelated = datasets_of(noise, frame_uid="1.2.9", study_uid="1.2.4")
    with pytest.raises(MRPreprocessError, match="registration of mr_noise to mr_t1_pre failed its quality check") as err:
        prepare_mr({"mr_t1_pre": good, "mr_noise": unrelated}, "mr_t1_pre", n4=False)
    assert err.value.registration is not None and not err.value.registration.passed
    # the same image in the reference's frame: geometry trusted as asked, the mismatch said
    same_frame = datasets_of(noise, frame_uid="1.2.3", study_uid="1.2.4")
    vols = prepare_mr({"mr_t1_pre": good, "mr_noise": same_frame}, "mr_t1_pre", n4=False)
    result = vols.registration["mr_noise"]
    assert not result.performed and result.passed and "below the registration threshold" in result.reason


def _stage_count(stage: str) -> float:
    return REGISTRY.get_sample_value("mvi_stage_duration_seconds_count", {"stage": stage}) or 0.0


def test_prepare_mr_on_a_synthetic_exam_written_to_dicom(tmp_path: Path):
    spec = draw_spec("mr", 7, 1, matrix=128, **SPEC)
    entry = write_exam(spec, tmp_path)
    series = _exam_series(tmp_path, entry, ("mr_t1_pre", "mr_portal_venous", "mr_transitional", "mr_t2"))
    before = {s: _stage_count(f"mr_{s}") for s in ("load", "n4", "normalise", "register", "resample")}
    vols = prepare_mr(series, "mr_portal_venous")
    shape = vols.geometry.shape
    assert set(vols.arrays) == {"mr_t1_pre", "mr_portal_venous", "mr_transitional", "mr_t2"}
    assert vols.inputs["mr_t2"]["shape"][0] != shape[0]  # T2: 6 mm slices, resampled, not indexed
    for role, arr in vols.arrays.items():
        assert arr.shape == shape and arr.dtype == np.float32
        assert arr.min() >= 0.0 and arr.max() <= 255.0 and arr.max() > 200
        lo, hi = vols.percentiles[role]
        assert hi > lo
    for role in ("mr_t1_pre", "mr_transitional", "mr_t2"):
        result = vols.registration[role]
        assert not result.performed and result.passed and "scanner geometry trusted" in result.reason
        assert result.metric_after > reg.MIN_NMI
        assert vols.record()["coverage"][role] > 0.95
    assert set(vols.timings) == {"load", "n4", "normalise", "register", "resample"}
    assert all(_stage_count(f"mr_{s}") == before[s] + 1 for s in before)
    record = vols.record()
    text = json.dumps(record, allow_nan=False)
    for secret in (spec.patient_id, spec.accession, spec.patient_name, str(entry["study_instance_uids"][0])):
        assert secret not in text
    assert "PatientID" not in text
    assert record["constants"] == PREPROCESSING_CONSTANTS and record["reference"] == "mr_portal_venous"
    assert record["percentiles"]["mr_t1_pre"] == [round(v, 4) for v in vols.percentiles["mr_t1_pre"]]
    assert record["n4"]["mr_t1_pre"]["shrink"]


def _exam_series(root: Path, entry: dict, wanted: tuple[str, ...]) -> dict[str, list[Dataset]]:
    roles = dict(entry["series"])
    series: dict[str, list[Dataset]] = defaultdict(list)
    for path in sorted((root / "dicom").rglob("*")):
        if path.is_file():
            ds = pydicom.dcmread(path, stop_before_pixels=True)  # pixels are read from ds.filename
            role = roles.get(str(ds.SeriesInstanceUID))
            if role in wanted:
                series[role].append(ds)
    return series


def test_prepare_mr_reads_enhanced_multiframe_series(tmp_path: Path):
    """Each sequence as ONE Enhanced MR instance (frames and geometry in functional
    groups): the frames are sorted along the normal and read like classic slices."""
    spec = draw_spec("mr", 7, 2, matrix=128, enhanced_multiframe=True, **SPEC)
    entry = write_exam(spec, tmp_path)
    series = _exam_series(tmp_path, entry, ("mr_t1_pre", "mr_portal_venous"))
    assert all(len(dss) == 1 and int(dss[0].NumberOfFrames) > 1 for dss in series.values())
    vols = prepare_mr(series, "mr_portal_venous", n4=False)
    instance = pydicom.dcmread(series["mr_portal_venous"][0].filename)
    frames = instance.pixel_array.astype(np.float32)
    groups = instance.PerFrameFunctionalGroupsSequence
    depth = [float(g.PlanePositionSequence[0].ImagePositionPatient[2]) for g in groups]
    expected = intensity.to_grey(frames[np.argsort(depth, kind="stable")], *vols.percentiles["mr_portal_venous"])
    assert vols.geometry.shape == frames.shape
    assert np.allclose(vols.arrays["mr_portal_venous"], expected, atol=1e-3)
    assert vols.arrays["mr_t1_pre"].shape == frames.shape
    assert not vols.registration["mr_t1_pre"].performed


def test_auto_registers_only_when_the_sequences_may_not_line_up():
    from mvi_node.preprocess.mr import _needs_registration

    def header(frame: str | None, study: str) -> list[Dataset]:
        ds = Dataset()
        ds.StudyInstanceUID = study
        if frame is not None:
            ds.FrameOfReferenceUID = frame
        return [ds]

    ref = header("1.1", "2.1")
    assert _needs_registration("auto", ref, header("1.1", "2.1")) == (
        False, "same frame of reference and study: scanner geometry trusted")
    assert _needs_registration("auto", ref, header("1.9", "2.1")) == (True, "different frame of reference")
    assert _needs_registration("auto", ref, header("1.1", "2.9")) == (True, "different studies")
    assert _needs_registration("auto", ref, header(None, "2.1")) == (True, "FrameOfReferenceUID missing")
    assert _needs_registration("always", ref, header("1.1", "2.1"))[0]
    assert not _needs_registration("never", ref, header("1.9", "2.9"))[0]
    with pytest.raises(ValueError, match="register must be one of"):
        prepare_mr({"a": ref}, "a", register="sometimes")
