"""Report stage, SR: TID 1500 content, identity, deterministic UIDs, validators.

Inputs are built from a small synthetic CT exam (its arterial series and truth mask);
the CAM and probabilities are fabricated: the model is not under test here.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from mvi_node.report import (
    LesionResult,
    ModelIdentity,
    PlanarRegion,
    ReportInput,
    SliceResult,
    build_outputs,
    save_outputs,
)
from mvi_node.report.validate import dciodvfy_errors, dsr2html, dsrdump

pytestmark = pytest.mark.skipif(not Path("/usr/bin/dciodvfy").exists() or not Path("/usr/bin/dsr2html").exists(),
                                reason="dicom3tools / DCMTK not installed")

SHA = "3f" * 32
INTENDED = "Research demonstration only: trained on synthetic phantoms, not for clinical use"


def model(sha256: str = SHA, synthetic: bool = True) -> ModelIdentity:
    return ModelIdentity(recipe="ct_ap_resnet18", name="ct_ap_resnet18", version="0.1.0", sha256=sha256,
                         intended_use=INTENDED, training_data="synthetic phantoms (mvi-node synth)",
                         synthetic=synthetic, variant="clinical")


def gaussian(size: int = 64, sigma: float = 8.0) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return np.exp(-((yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2) / (2 * sigma**2)).astype(np.float32)


class Exam:
    """A synthetic CT exam on disk: the arterial series (top to bottom) and the lesion mask."""

    def __init__(self, root: Path, mvi: bool = True, index: int = 0):
        from mvi_node.synth import make_exam

        self.manifest = m = make_exam(root, "ct", seed=777, index=index, hard_cases="none", matrix=96, mvi=mvi,
                                      annotations="seg", seg_on="arterial")
        art = m["recipes"]["ct_ap_resnet18"]["ct_arterial"]
        self.all = [dcmread(f) for f in sorted((root / m["dicom_dir"]).rglob("*.dcm"))]
        self.arterial = sorted((d for d in self.all if str(d.SeriesInstanceUID) == art),
                               key=lambda d: -float(d.ImagePositionPatient[2]))
        self.truth = np.load(root / m["truth"]["dir"] / "lesions.npy") > 0
        self.study_uid = m["study_instance_uids"][0]
        self.tumour_slices = [z for z in range(len(self.truth)) if self.truth[z].sum() > 20]

    def first_instance(self):
        return min(self.all, key=lambda d: (int(d.get("SeriesNumber", 0) or 0), int(d.get("InstanceNumber", 0) or 0)))

    def slices(self, n: int = 5, half: float = 20.0) -> list[SliceResult]:
        """``n`` tumour slices, CAM peak at the tumour centroid, probabilities rising."""
        out = []
        for k, z in enumerate(self.tumour_slices[:n]):
            rows, cols = np.nonzero(self.truth[z])
            cr, cc = rows.mean() + 0.5, cols.mean() + 0.5
            out.append(SliceResult(source=self.arterial[z], probability=0.4 + 0.1 * k, cam=gaussian(),
                                   crop_box=(cr - half, cc - half, cr + half, cc + half), roi_mask=self.truth[z]))
        return out

    def report(self, *, positive: bool = True, region: str | None = "polygon", sha256: str = SHA,
               graded: bool = False) -> ReportInput:
        slices = self.slices()
        key = max(slices, key=lambda s: s.probability)
        r0, c0, r1, c1 = key.crop_box
        roi = {"polygon": PlanarRegion.box(r0, c0, r1, c1),
               "circle": PlanarRegion.circle((c0 + c1) / 2, (r0 + r1) / 2, (c1 - c0) / 2), None: None}[region]
        lesion = LesionResult(
            tracking_id="Tumor 1", tracking_uid="2.25.1234567890", probability=0.83 if positive else 0.21,
            threshold=0.42, predicted_mvi=positive, key_slice=key.source, max_diameter_mm=71.1,
            grade_probabilities={"M0": 0.17, "M1": 0.5, "M2": 0.33} if graded else None, roi_region=roi,
            slices=slices)
        return ReportInput(evidence=[s.source for s in slices], model=model(sha256), lesions=[lesion],
                           clinical_factors_used={"age": 71, "afp_ng_ml": 126.3, "child_pugh": "A"}, outcome="ok")

    def not_evaluated(self, outcome: str) -> ReportInput:
        evidence = [self.first_instance()] if outcome == "no eligible series" else [self.arterial[0]]
        return ReportInput(evidence=evidence, model=model(), outcome=outcome,
                           outcome_detail="no arterial phase series" if outcome == "no eligible series"
                           else "no SEG, RTSTRUCT, SR or GSPS annotation of a tumour")


@pytest.fixture(scope="module")
def exam(tmp_path_factory) -> Exam:
    return Exam(tmp_path_factory.mktemp("exam"))


def walk(ds):
    for item in ds.get("ContentSequence", []):
        yield item
        yield from walk(item)


def nums(sr) -> dict[str, tuple[float, str]]:
    return {i.ConceptNameCodeSequence[0].CodeMeaning: (float(i.MeasuredValueSequence[0].NumericValue),
                                                       i.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue)
            for i in walk(sr) if i.ValueType == "NUM" and "MeasuredValueSequence" in i}


def codes_of(sr, concept: str) -> list[str]:
    return [i.ConceptCodeSequence[0].CodeValue for i in walk(sr)
            if i.ValueType == "CODE" and i.ConceptNameCodeSequence[0].CodeValue == concept]


NEOPLASM = "108369006"  # the finding type (TID 1501 row "Finding"), beside the MVI finding


def findings(sr) -> list[str]:
    """The MVI finding(s): CODE items under (121071, DCM) other than the finding type."""
    codes = codes_of(sr, "121071")
    assert NEOPLASM in codes  # every group says what was measured: a neoplasm
    return [c for c in codes if c != NEOPLASM]


def texts(sr, meaning: str | None = None) -> list[str]:
    return [str(i.TextValue) for i in walk(sr) if i.ValueType == "TEXT"
            and (meaning is None or i.ConceptNameCodeSequence[0].CodeMeaning == meaning)]


def uidrefs(sr, meaning: str) -> list[str]:
    return [str(i.UID) for i in walk(sr) if i.ValueType == "UIDREF"
            and i.ConceptNameCodeSequence[0].CodeMeaning == meaning]


def valid_sr(sr, folder: Path) -> str:
    (path,) = save_outputs([sr], folder)
    assert dciodvfy_errors(path) == []
    dsrdump(path)  # raises when DCMTK cannot read it
    return dsr2html(path)


def test_positive_sr_content_identity_and_validity(exam, tmp_path):
    inp = exam.report(positive=True, graded=True)
    sr, *scs = build_outputs(inp)
    assert len(scs) == 3
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.ConceptNameCodeSequence[0].CodeValue == "126000"
    # same patient and study as the source; own series
    src = exam.arterial[0]
    assert sr.StudyInstanceUID == exam.study_uid and sr.PatientID == src.PatientID
    assert sr.SeriesInstanceUID != src.SeriesInstanceUID
    n = nums(sr)
    assert n["Microvascular invasion probability"] == (pytest.approx(0.83), "1")
    assert n["Threshold Value"] == (pytest.approx(0.42), "1")
    assert n["Maximum tumor diameter"] == (pytest.approx(71.1), "mm")
    assert n["Probability of MVI grade M1"][0] == pytest.approx(0.5)
    assert findings(sr) == ["372287009"]
    assert uidrefs(sr, "Tracking Unique Identifier") == ["2.25.1234567890"]
    assert texts(sr, "Tracking Identifier") == ["Tumor 1"]
    assert "ct_ap_resnet18" in texts(sr, "Algorithm Name") and "0.1.0" in texts(sr, "Algorithm Version")
    assert f"sha256={SHA}" in texts(sr, "Algorithm Parameters")
    assert codes_of(sr, "363698007") == ["10200004"]  # finding site liver
    # the private scheme is declared
    assert "99MVINODE" in [s.CodingSchemeDesignator for s in sr.CodingSchemeIdentificationSequence]
    # intended use and the factors used, in the tree and in the headers
    assert any(INTENDED in t for t in texts(sr, "Intended use"))
    assert "age=71" in texts(sr, "Clinical factor used")
    assert "NOT FOR CLINICAL USE" in sr.SeriesDescription and "NOT FOR CLINICAL USE" in sr.ContentDescription
    # contributing equipment names the model; the device UID follows the sha256
    (eq,) = [e for e in sr.ContributingEquipmentSequence if e.Manufacturer == "mvi-node project"]
    assert SHA in eq.ContributionDescription
    assert eq.DeviceUID == model().device_uid and eq.ManufacturerModelName == "ct_ap_resnet18 0.1.0"
    assert model().device_uid == model(SHA).device_uid != model("00" * 32).device_uid
    assert uidrefs(sr, "Device Observer UID") == [model().device_uid]
    # the Image Library lists every evidence slice
    library = {str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for i in walk(sr) if i.ValueType == "IMAGE"}
    assert {str(d.SOPInstanceUID) for d in inp.evidence} <= library
    html = valid_sr(sr, tmp_path)
    assert "Vascular invasion by tumor present" in html and "0.83 1" in html and INTENDED in html


def test_negative_sr_without_planar_roi(exam, tmp_path):
    sr = build_outputs(exam.report(positive=False, region=None), n_sc=0)[0]
    assert findings(sr) == ["127494000"]
    assert nums(sr)["Microvascular invasion probability"][0] == pytest.approx(0.21)
    assert not [i for i in walk(sr) if i.ValueType == "SCOORD"]
    assert "No vascular invasion by tumor" in valid_sr(sr, tmp_path)


def test_planar_circle_roi_on_the_key_slice(exam, tmp_path):
    inp = exam.report(region="circle")
    sr = build_outputs(inp, n_sc=0)[0]
    (scoord,) = [i for i in walk(sr) if i.ValueType == "SCOORD"]
    assert scoord.GraphicType == "CIRCLE" and len(scoord.GraphicData) == 4
    assert scoord.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == \
        inp.lesions[0].key_slice.SOPInstanceUID
    # the planar-ROI group (TID 1410) carries the probability NUM next to the region
    group = next(i for i in walk(sr) if i.ValueType == "CONTAINER" and any(c.ValueType == "SCOORD"
                                                                           for c in i.get("ContentSequence", [])))
    assert any(c.ValueType == "NUM" and c.ConceptNameCodeSequence[0].CodeValue == "MVI-P" for c in group.ContentSequence)
    valid_sr(sr, tmp_path)


def test_polygon_roi_is_a_closed_polyline(exam):
    sr = build_outputs(exam.report(region="polygon"), n_sc=0)[0]
    (scoord,) = [i for i in walk(sr) if i.ValueType == "SCOORD"]
    pts = np.asarray(scoord.GraphicData, float).reshape(-1, 2)
    assert scoord.GraphicType == "POLYLINE" and len(pts) == 5 and np.allclose(pts[0], pts[-1])


@pytest.mark.parametrize("outcome", ["no tumour ROI", "no eligible series"])
def test_not_evaluated_sr_says_why(exam, tmp_path, outcome):
    inp = exam.not_evaluated(outcome)
    outputs = build_outputs(inp)
    assert len(outputs) == 1  # no captures without an evaluation
    sr = outputs[0]
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.StudyInstanceUID == exam.study_uid
    assert findings(sr) == ["MVI-NE"]
    assert any(outcome in t for t in texts(sr, "Comment"))
    assert uidrefs(sr, "Tracking Unique Identifier")
    assert not nums(sr).get("Microvascular invasion probability")
    assert outcome in sr.ContentDescription
    html = valid_sr(sr, tmp_path)
    assert outcome in html


def test_uids_are_deterministic_and_follow_the_model(exam):
    a = build_outputs(exam.report())
    b = build_outputs(exam.report())
    other = build_outputs(exam.report(sha256="00" * 32))
    key = lambda outs: [(str(d.SeriesInstanceUID), str(d.SOPInstanceUID), int(d.SeriesNumber),  # noqa: E731
                         int(d.InstanceNumber)) for d in outs]
    assert key(a) == key(b)
    assert len({u for _, u, _, _ in key(a)}) == len(a)  # SR and each SC distinct
    assert not {u for _, u, _, _ in key(a)} & {u for _, u, _, _ in key(other)}
    assert {s for s, _, _, _ in key(a)}.isdisjoint({s for s, _, _, _ in key(other)})
    assert [n for _, _, n, _ in key(a)] == [n for _, _, n, _ in key(other)]  # stable series numbers
    # the not-evaluated SR is deterministic too
    assert build_outputs(exam.not_evaluated("no tumour ROI"))[0].SOPInstanceUID == \
        build_outputs(exam.not_evaluated("no tumour ROI"))[0].SOPInstanceUID


def test_errors_carry_no_patient_identity(exam):
    inp = exam.report()
    inp.lesions[0].slices[0].cam = np.zeros((7, 9))
    inp.lesions[0].slices[0].crop_box = None
    inp.lesions[0].slices[0].probability = 0.99  # make it a chosen capture
    with pytest.raises(ValueError) as err:
        build_outputs(inp)
    src = exam.arterial[0]
    for ident in (str(src.PatientName), str(src.PatientID), str(src.AccessionNumber)):
        assert ident not in str(err.value)
    with pytest.raises(ValueError) as err:
        build_outputs(replace(inp, evidence=[]))
    assert str(src.PatientID) not in str(err.value)


def _procedure(sr) -> str:
    """TID 1500's Procedure Reported (121058, DCM)."""
    item = next(i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121058")
    return str(item.ConceptCodeSequence[0].CodeMeaning)


def test_engine_adapter_fills_the_report_input(exam):
    """outputs.report_input_from_engine: a recipe-neutral engine result (no model needed)."""
    from mvi_node.concepts import CT_PROCEDURE, MR_PROCEDURE
    from mvi_node.infer import Finding, KeySlice, NotEvaluated, Prediction, RecipeResult
    from mvi_node.infer.recipe import MVI
    from mvi_node.report.outputs import build_results, report_input_from_engine

    zs = exam.tumour_slices[:3]
    slices = []
    for k, z in enumerate(zs):
        rows, cols = np.nonzero(exam.truth[z])
        box = {"center_col": cols.mean() + 0.5, "center_row": rows.mean() + 0.5, "edge_cols": 30.0,
               "edge_rows": 30.0, "edge_mm": 118.0}
        slices.append(KeySlice(str(exam.arterial[z].SOPInstanceUID), z, 0.3 + 0.2 * k, box, gaussian(256, 30),
                               exam.truth[z]))
    identity = {"recipe": "ct_ap_resnet18", "model_version": "0.1.0", "variant": "clinical", "sha256": SHA,
                "intended_use": INTENDED, "training_data": "synthetic phantoms"}
    pred = Prediction(probability=0.7, threshold=0.42, decision=True,
                      findings=(Finding("Tumor 1", 0.7, True, 71.1, key_slices=tuple(slices)),),
                      series_uid=str(exam.arterial[0].SeriesInstanceUID), variant="clinical",
                      factors={"age": 71, "mtd_mm": 71.1, "hcv": None}, factors_origin={"age": "header"},
                      factors_used=True)
    res = RecipeResult("ct_ap_resnet18", "P", ("1.2.3",), identity, CT_PROCEDURE, MVI, prediction=pred,
                       capture_window=(70.0, 200.0))
    units = SimpleNamespace(units=[SimpleNamespace(datasets=exam.all)])
    inp = report_input_from_engine(res, units)
    assert inp.model.synthetic and inp.model.sha256 == SHA and inp.model.device_uid == model().device_uid
    assert inp.clinical_factors_used == {"age": "71 (header)", "mtd_mm": 71.1} and not inp.image_only
    (lesion,) = inp.lesions
    assert lesion.key_slice.SOPInstanceUID == exam.arterial[zs[-1]].SOPInstanceUID  # highest probability
    assert lesion.max_diameter_mm == pytest.approx(71.1) and lesion.roi_region.graphic_type == "CIRCLE"
    assert lesion.slices[0].crop_box[2] - lesion.slices[0].crop_box[0] == pytest.approx(30.0)
    outs = build_results(res, units, secondary_captures=2)
    assert [d.Modality for d in outs] == ["SR", "OT", "OT"]
    assert nums(outs[0])["Microvascular invasion probability"][0] == pytest.approx(0.7)

    not_run = RecipeResult("ct_ap_resnet18", "P", ("1.2.3",), identity, CT_PROCEDURE, MVI,
                           not_evaluated=NotEvaluated("no eligible series", ("no arterial phase",),
                                                      factors_missing=("afp",)))
    (sr,) = build_results(not_run, units)
    assert any("no eligible series" in t and "no arterial phase" in t for t in texts(sr, "Comment"))
    assert _procedure(sr) == "CT unspecified body region"

    # an exam no recipe could evaluate: one SR, one line per candidate recipe, the exam's procedure
    nothing = RecipeResult("", "P", ("1.2.3",), {"name": "mvi-node", "model_version": "0.1.0",
                                                   "intended_use": "triage", "training_data": ""}, MR_PROCEDURE,
                           not_evaluated=NotEvaluated("no recipe for this exam"),
                           not_run=(("mr_a 0.1", "no tumour ROI"), ("mr_b 0.2", "no eligible series")))
    (sr,) = build_results(nothing, units)
    comments = texts(sr, "Comment")
    assert "mr_a 0.1: no tumour ROI" in comments and "mr_b 0.2: no eligible series" in comments
    assert _procedure(sr) == "MRI unspecified body region"
    assert "CT" not in str(sr.ContentDescription)
