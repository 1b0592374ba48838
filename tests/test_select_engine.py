"""Selection engine: roles, timing, agents, preferences, grouping, phases, report, CLI, job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mvi_node.commands.main import main
from mvi_node.select.engine import select_datasets
from select_fixtures import CORONAL, SEED_NEEDS, Exam, hms, t1_gre
from mvi_node.select.report import build_report

T0 = 10 * 3600.0  # 10:00:00


def roles(exams) -> dict[str, str]:
    return {u.uid: u.role for e in exams for u in e.units}


def by_desc(exams) -> dict[str, str]:
    return {str(u.ds.SeriesDescription): u.role for e in exams for u in e.units}


def one(exams):
    (exam,) = exams
    return exam


# --- CT phases --------------------------------------------------------------------------
def test_ct_phases_from_bolus_start_time():
    e = Exam()
    start = hms(T0 - 40)
    kw = dict(ContrastBolusStartTime=start, ContrastBolusAgent="Iomeprol")
    e.series("a", time=T0 - 120, ContrastBolusStartTime=start)
    e.series("b", time=T0, **kw)
    e.series("c", time=T0 + 35, **kw)
    e.series("d", time=T0 + 200, **kw)
    exam = one(select_datasets(e.datasets))
    assert [u.role for u in exam.units] == ["ct_non_contrast", "ct_arterial", "ct_portal_venous", "ct_delayed"]
    assert "40 s after ContrastBolusStartTime" in exam.units[1].reason


def test_ct_phases_from_order_and_spacing_without_descriptions():
    e = Exam()
    for t in (T0, T0 + 100, T0 + 135, T0 + 300):
        e.series("Abdomen 5.0 B30f", time=t)
    exam = one(select_datasets(e.datasets))
    assert [u.role for u in exam.units] == ["ct_non_contrast", "ct_arterial", "ct_portal_venous", "ct_delayed"]
    assert "order and spacing" in exam.units[1].reason


def test_ct_without_native_scan():
    e = Exam()
    for t in (T0, T0 + 35, T0 + 180):
        e.series("Abdomen", time=t)
    assert [u.role for u in one(select_datasets(e.datasets)).units] == ["ct_arterial", "ct_portal_venous", "ct_delayed"]


def test_single_undescribed_series_is_not_guessed():
    e = Exam()
    e.series("Abdomen", time=T0)
    unit = one(select_datasets(e.datasets)).units[0]
    assert unit.role == "other" and "ambiguous" in unit.reason


def test_agent_absence_marks_the_native_scan():
    e = Exam()
    e.series("Abdomen", time=T0)
    e.series("Abdomen", time=T0 + 60, ContrastBolusAgent="Ultravist 370")
    e.series("Abdomen", time=T0 + 95, ContrastBolusAgent="Ultravist 370")
    assert [u.role for u in one(select_datasets(e.datasets)).units] == [
        "ct_non_contrast",
        "ct_arterial",
        "ct_portal_venous",
    ]


@pytest.mark.parametrize(
    "description, role",
    [
        ("Leber nativ 5mm", "ct_non_contrast"),
        ("Leber arteriell 5mm", "ct_arterial"),
        ("Leber portalvenös", "ct_portal_venous"),
        ("Abdomen venös 3mm", "ct_portal_venous"),
        ("Spätphase 5mm", "ct_delayed"),
        ("Fase arterial", "ct_arterial"),
        ("Fase portal", "ct_portal_venous"),
        ("Fase tardía", "ct_delayed"),
        ("Sin contraste", "ct_non_contrast"),
        ("Phase artérielle", "ct_arterial"),
        ("Temps portal", "ct_portal_venous"),
        ("Phase tardive", "ct_delayed"),
        ("Fase arteriosa", "ct_arterial"),
        ("Fase venosa portale", "ct_portal_venous"),
        ("Basale", "ct_non_contrast"),
        ("动脉期 5mm", "ct_arterial"),
        ("门脉期", "ct_portal_venous"),
        ("门静脉期", "ct_portal_venous"),
        ("延迟期", "ct_delayed"),
        ("平扫", "ct_non_contrast"),
        ("動脈相", "ct_arterial"),
        ("門脈相", "ct_portal_venous"),
        ("平衡相", "ct_delayed"),
        ("単純", "ct_non_contrast"),
        ("LATE ART 5mm", "ct_arterial"),
        ("ABD/PEL PV 3mm", "ct_portal_venous"),
        ("Delayed 3 min", "ct_delayed"),
        ("Abd w/o", "ct_non_contrast"),
    ],
)
def test_descriptions_in_many_languages(description, role):
    e = Exam()
    e.series(description, time=T0)
    assert one(select_datasets(e.datasets)).units[0].role == role


@pytest.mark.parametrize(
    "description, attrs",
    [
        ("Topogram 0.6 T20f", {"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}),
        ("Scout", {}),
        ("3-Plane Loc", {}),
        ("Monitoring", {}),
        ("SmartPrep", {}),
        ("Abdomen", {"ImageType": ["DERIVED", "SECONDARY", "SCREEN SAVE"]}),
        ("Dose Report", {}),
        ("Abdomen MIP 10mm", {"ImageType": ["DERIVED", "SECONDARY", "MIP"]}),
        ("Cor MinIP", {}),
    ],
)
def test_never_model_input_images_are_other_with_reason(description, attrs):
    e = Exam()
    e.series(description, time=T0, **attrs)
    unit = one(select_datasets(e.datasets)).units[0]
    assert unit.role == "other" and unit.rule is not None and unit.reason


def test_bolus_tracking_recognised_by_geometry():
    e = Exam()
    (s,) = [e.series("Abdomen", time=T0, slices=12)]
    for i, ds in enumerate(s):
        ds.ImagePositionPatient = [0.0, 0.0, -100.0]
        ds.AcquisitionTime = hms(T0 + i)
    unit = one(select_datasets(e.datasets)).units[0]
    assert unit.role == "other" and unit.rule == "bolus-tracking"


def test_non_axial_reformat_is_other():
    e = Exam()
    e.series("Arterial cor 3mm", time=T0, orientation=CORONAL)
    unit = one(select_datasets(e.datasets)).units[0]
    assert unit.role == "other" and unit.rule == "non-axial"


# --- non-image objects ------------------------------------------------------------------
def _object(sop_class: str, modality: str, **attrs) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyInstanceUID = attrs.pop("StudyInstanceUID")
    ds.Modality = modality
    ds.PatientID = "P1"
    ds.AccessionNumber = "A1"
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def _code(value: str, scheme: str = "DCM") -> Dataset:
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, value
    return c


def test_seg_rtstruct_gsps_and_srs():
    e = Exam()
    e.series("Art", time=T0)
    study = e.study_uid
    tpl = Dataset()
    tpl.MappingResource, tpl.TemplateIdentifier = "DCMR", "1500"
    roi = Dataset()
    roi.ValueType = "SCOORD"
    container = Dataset()
    container.ValueType = "CONTAINER"
    container.ContentSequence = [roi]
    objs = [
        _object("1.2.840.10008.5.1.4.1.1.66.4", "SEG", StudyInstanceUID=study, SeriesDescription="Tumour"),
        _object("1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT", StudyInstanceUID=study, SeriesDescription="ROI"),
        _object("1.2.840.10008.5.1.4.1.1.11.1", "PR", StudyInstanceUID=study, SeriesDescription="circle"),
        _object(
            "1.2.840.10008.5.1.4.1.1.88.34", "SR", StudyInstanceUID=study, SeriesDescription="TID1500",
            ContentTemplateSequence=[tpl], ConceptNameCodeSequence=[_code("126000")],
        ),
        _object(
            "1.2.840.10008.5.1.4.1.1.88.33", "SR", StudyInstanceUID=study, SeriesDescription="planar roi",
            ContentSequence=[container],
        ),
        _object(
            "1.2.840.10008.5.1.4.1.1.88.67", "SR", StudyInstanceUID=study, SeriesDescription="Dose",
            ConceptNameCodeSequence=[_code("113701")],
        ),
        _object("1.2.840.10008.5.1.4.1.1.88.11", "SR", StudyInstanceUID=study, SeriesDescription="text"),
    ]
    result = by_desc(select_datasets(e.datasets + objs))
    assert result["Tumour"] == "seg" and result["ROI"] == "seg"
    assert result["circle"] == "annotation" and result["TID1500"] == "annotation"
    assert result["planar roi"] == "annotation"
    assert result["Dose"] == "other" and result["text"] == "other"


# --- MR ---------------------------------------------------------------------------------
def _mr_exam(agent: str | None = "Primovist", hbp_delay: float = 1200, descriptions: bool = False, **kw) -> Exam:
    e = Exam(modality="MR", **kw)
    e.series("t2_haste_tra_mbh" if descriptions else "", time=T0 - 600, RepetitionTime=1400, EchoTime=95, ScanningSequence="SE")
    e.series("", time=T0 - 500, DiffusionBValue=800, ScanningSequence="EP", RepetitionTime=5200, EchoTime=62)
    e.series("", time=T0 - 490, ImageType=["DERIVED", "PRIMARY", "ADC", "DIS2D"])
    post = dict(ContrastBolusAgent=agent) if agent else {}
    names = ["pre", "arterial", "portal", "transitional", "hepatobiliary"] if descriptions else [""] * 5
    e.series(names[0], time=T0 - 60, **t1_gre())
    e.series(names[1], time=T0, **t1_gre(), **post)
    e.series(names[2], time=T0 + 40, **t1_gre(), **post)
    e.series(names[3], time=T0 + 150, **t1_gre(), **post)
    e.series(names[4], time=T0 - 30 + hbp_delay, **t1_gre(), **post)
    return e


def test_mr_sequences_from_parameters_with_gd_eob():
    exam = one(select_datasets(_mr_exam().datasets))
    assert [u.role for u in exam.units] == [
        "mr_t2", "mr_dwi", "mr_adc", "mr_t1_pre", "mr_arterial", "mr_portal_venous", "mr_transitional", "mr_hepatobiliary",
    ]
    assert exam.agent == "hepatobiliary"
    report = build_report([exam], needs=SEED_NEEDS)["studies"][0]
    assert report["recipes"] == [
        {
            "name": "mr_3seq_grade",
            "inputs": {
                "mr_t1_pre": exam.units[3].uid,
                "mr_portal_venous": exam.units[5].uid,
                "mr_transitional": exam.units[6].uid,
            },
        }
    ]
    # the CT recipe does not apply to an MR exam: neither qualified nor "not qualified"
    assert report["not_qualified"] == []
    ct_exam = build_report([exam], needs=SEED_NEEDS[:1])["studies"][0]
    assert ct_exam["recipes"] == [] and ct_exam["not_qualified"] == []


def test_extracellular_agent_late_series_is_transitional():
    exam = one(select_datasets(_mr_exam(agent="Dotarem").datasets))
    mid, late = exam.units[-2], exam.units[-1]
    assert exam.agent == "extracellular" and "mr_hepatobiliary" not in [u.role for u in exam.units]
    # both are transitional candidates; the one closest to 3 min wins and the loser names it
    assert mid.role == "mr_transitional" and "extracellular" in mid.reason
    assert late.role == "other" and late.candidate_role == "mr_transitional" and mid.uid in late.reason
    # alone, the late series is the transitional one
    e = _mr_exam(agent="Dotarem")
    e.datasets = [d for d in e.datasets if d.SeriesNumber != mid.ds.SeriesNumber]
    late_only = one(select_datasets(e.datasets)).units[-1]
    assert late_only.role == "mr_transitional" and "extracellular" in late_only.reason


def test_missing_agent_inferred_from_a_20_min_series():
    exam = one(select_datasets(_mr_exam(agent=None).datasets))
    hbp = exam.units[-1]
    assert hbp.role == "mr_hepatobiliary"
    assert "inferred from timing" in hbp.reason and "Gd-EOB" in hbp.reason


def test_description_hepatobiliary_and_gadobenate_is_extracellular():
    exam = one(select_datasets(_mr_exam(agent="Primovist", descriptions=True).datasets))
    assert by_desc([exam])["hepatobiliary"] == "mr_hepatobiliary"
    # hepatobiliary needs gadoxetate: with gadobenate (extracellular here) the series is late/transitional
    exam = one(select_datasets(_mr_exam(agent="MultiHance", descriptions=True).datasets))
    assert exam.agent == "extracellular"
    late = next(u for u in exam.units if str(u.ds.SeriesDescription) == "hepatobiliary")
    assert late.role != "mr_hepatobiliary" and "mr_transitional" in (late.role, late.candidate_role)
    assert "extracellular" in late.reason


def test_mr_agent_code_sequence():
    e = _mr_exam(agent=None)
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "C1", "X", "Gadoxetate disodium"
    for ds in e.datasets:
        ds.ContrastBolusAgentSequence = [code]
    assert one(select_datasets(e.datasets)).agent == "hepatobiliary"


def test_mr_dixon_and_in_opposed_phase_are_other():
    e = Exam(modality="MR")
    e.series("t1_vibe_dixon_tra_opp", time=T0, **t1_gre(ImageType=["DERIVED", "PRIMARY", "DIXON", "OPP_PHASE"]))
    e.series("t1_fl2d_in_opp", time=T0 + 30, RepetitionTime=150, EchoTime=2.3, ScanningSequence="GR")
    e.series("WATER: LAVA-Flex", time=T0 + 200, **t1_gre())
    result = by_desc(select_datasets(e.datasets))
    assert result["t1_vibe_dixon_tra_opp"] == "other"
    assert result["t1_fl2d_in_opp"] == "other"


# --- preferences ------------------------------------------------------------------------
def test_late_arterial_preferred_over_early_and_loser_names_winner():
    e = Exam()
    e.series("Early arterial", time=T0)
    e.series("Late arterial", time=T0 + 12)
    e.series("Portal", time=T0 + 45)
    exam = one(select_datasets(e.datasets))
    early, late = exam.units[0], exam.units[1]
    assert late.role == "ct_arterial" and early.role == "other"
    assert late.uid in early.reason and "late arterial" in early.reason
    assert early.candidate_role == "ct_arterial"


def test_late_arterial_by_timing_when_descriptions_are_silent():
    e = Exam()
    e.series("Abdomen", time=T0, ContrastBolusStartTime=hms(T0 - 22))
    e.series("Abdomen", time=T0 + 14, ContrastBolusStartTime=hms(T0 - 22))
    exam = one(select_datasets(e.datasets))
    assert [u.role for u in exam.units] == ["other", "ct_arterial"]


def test_thickness_then_coverage_preference():
    e = Exam()
    e.series("Arterial 1mm", time=T0, thickness=1.0, slices=20)
    e.series("Arterial 5mm", time=T0, thickness=5.0, slices=4)
    e.series("Arterial 8mm", time=T0, thickness=8.0, slices=4)
    e.series("Arterial 5mm short", time=T0, thickness=5.0, slices=2)
    result = by_desc(select_datasets(e.datasets))
    assert result == {
        "Arterial 1mm": "other",
        "Arterial 5mm": "ct_arterial",
        "Arterial 8mm": "other",
        "Arterial 5mm short": "other",
    }


def test_preference_is_deterministic_on_ties():
    picks = set()
    for _ in range(3):
        e = Exam()
        e.series("Arterial", time=T0)
        e.series("Arterial", time=T0)
        exam = one(select_datasets(e.datasets))
        picks.add(tuple(u.role for u in exam.units))
    assert picks == {("ct_arterial", "other")}


# --- grouping and phases ----------------------------------------------------------------
def test_one_exam_as_several_studies():
    e = Exam()
    uids = [generate_uid() for _ in range(3)]
    for uid, t, d in zip(uids, (T0, T0 + 35, T0 + 200), ("arterial", "portal", "delayed")):
        e.series(d, time=t, study_uid=uid)
    other = Exam(patient="P2", accession="A9")
    other.series("arterial", time=T0)
    exams = select_datasets(e.datasets + other.datasets)
    assert sorted(len(x.study_uids) for x in exams) == [1, 3]
    big = next(x for x in exams if len(x.study_uids) == 3)
    assert sorted(big.study_uids) == sorted(uids)


def test_same_accession_other_patient_is_not_merged():
    a, b = Exam(patient="P1", accession="X"), Exam(patient="P2", accession="X")
    a.series("arterial", time=T0)
    b.series("arterial", time=T0)
    assert len(select_datasets(a.datasets + b.datasets)) == 2


def test_multiphase_series_split_by_temporal_position():
    e = Exam(modality="MR")
    e.series("dyn_pre", time=T0 - 60, **t1_gre())
    (s,) = [e.series("", time=T0, phases=3, phase_gap=40, ContrastBolusAgent="Primovist", **t1_gre())]
    exam = one(select_datasets(e.datasets))
    series_uid = s[0].SeriesInstanceUID
    got = {u.uid: u.role for u in exam.units}
    assert got[f"{series_uid}#1"] == "mr_arterial"
    assert got[f"{series_uid}#2"] == "mr_portal_venous"
    assert got[f"{series_uid}#3"] == "mr_transitional" or got[f"{series_uid}#3"] == "other"


def test_multiphase_series_split_by_trigger_time_ge():
    e = Exam(modality="MR")
    e.series("pre", time=T0 - 60, **t1_gre())
    (s,) = [e.series("LAVA multiphase", time=T0, phases=3, phase_by="TriggerTime", phase_gap=8, **t1_gre())]
    e.series("", time=T0 + 50, **t1_gre())
    e.series("", time=T0 + 170, **t1_gre())
    exam = one(select_datasets(e.datasets))
    uid = s[0].SeriesInstanceUID
    phases = [u for u in exam.units if u.series_uid == uid]
    assert [u.uid for u in phases] == [f"{uid}#1", f"{uid}#2", f"{uid}#3"]
    # three arterial sub-phases: the latest wins (late arterial), the others name it
    assert [u.role for u in phases] == ["other", "other", "mr_arterial"]
    assert f"{uid}#3" in phases[0].reason
    assert [u.role for u in exam.units if u.series_uid != uid] == ["mr_t1_pre", "mr_portal_venous", "mr_transitional"]


def test_multiphase_series_split_by_acquisition_time_siemens():
    e = Exam()
    (s,) = [e.series("Abdomen dyn", time=T0, slices=3, phases=2, phase_gap=35)]
    for ds in s:  # no TemporalPositionIdentifier: positions repeat, times differ
        del ds.TemporalPositionIdentifier
        del ds.NumberOfTemporalPositions
    exam = one(select_datasets(e.datasets))
    assert [u.uid.split("#")[1] for u in exam.units] == ["1", "2"]
    assert [u.role for u in exam.units] == ["ct_arterial", "ct_portal_venous"]


def test_dwi_with_several_b_values_is_not_split():
    e = Exam(modality="MR")
    (s,) = [e.series("ep2d_diff", time=T0, slices=2, ScanningSequence="EP", RepetitionTime=5000, EchoTime=60)]
    s2 = e.series("ep2d_diff", time=T0, slices=2)
    for ds, b in zip(s + s2, (50, 50, 800, 800)):
        ds.DiffusionBValue = b
        ds.SeriesInstanceUID = s[0].SeriesInstanceUID
    exam = one(select_datasets(e.datasets))
    assert len(exam.units) == 1 and exam.units[0].role == "mr_dwi"


# --- report, CLI, job -------------------------------------------------------------------
def test_report_is_json_and_explains_unusable_study():
    e = Exam()
    e.series("Topogram", time=T0, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    report = build_report(select_datasets(e.datasets), needs=SEED_NEEDS)
    json.dumps(report)
    study = report["studies"][0]
    assert study["series"][0]["role"] == "other"
    assert study["recipes"] == [] and any("no usable series" in n for n in study["notes"])
    assert {m["name"] for m in study["not_qualified"]} == {"ct_ap_resnet18"}  # the MR recipe does not apply
    assert build_report([])["notes"] == ["no DICOM series found"]


def _save(ds: Dataset, path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def test_cli_select_folder_json(tmp_path, capsys):
    e = Exam()
    for t, d in ((T0, "Leber arteriell"), (T0 + 35, "Leber portalvenös")):
        e.series(d, time=t)
    for i, ds in enumerate(e.datasets):
        _save(ds, tmp_path / "in" / "sub" / f"{i}.dcm")
    (tmp_path / "in" / "notes.txt").write_text("not dicom")
    (tmp_path / "in" / "DICOMDIR").write_bytes(b"\0" * 200)
    assert main(["select", str(tmp_path / "in"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (study,) = out["studies"]
    assert [s["role"] for s in study["series"]] == ["ct_arterial", "ct_portal_venous"]
    assert study["recipes"][0]["name"] == "ct_ap_resnet18"
    assert main(["select", str(tmp_path / "in")]) == 0
    assert "ct_ap_resnet18" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("disable = ['nope']")
    assert main(["select", str(tmp_path / "in"), "--rules", str(bad)]) == 2


def test_job_result_holds_selection_of_the_whole_exam(tmp_path):
    from mvi_node.jobs.store import Job
    from mvi_node.pipeline import StudyPipeline

    staging = tmp_path / "staging"
    e = Exam()
    uid_a, uid_p = generate_uid(), generate_uid()
    e.series("Abdomen", time=T0, study_uid=uid_a)
    e.series("Abdomen", time=T0 + 35, study_uid=uid_p)
    from mvi_node.stage.index import InstanceRecord, StagingIndex

    index = StagingIndex(tmp_path / "index.sqlite3")
    for ds in e.datasets:  # staged as the listener stages: file and index row
        _save(ds, staging / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm")
        index.add(InstanceRecord(str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                                 str(ds.SOPClassUID), "1.2.840.10008.1.2.1", 1000))

    handler = StudyPipeline(index, staging)
    from mvi_node.jobs.store import JobState

    job = Job(1, "study", uid_a, JobState.RUNNING, 1, 3, {"study_uid": uid_a}, 0.0, 0.0)
    result = handler(job)
    json.dumps(result)
    (study,) = result["selection"]["studies"]
    assert sorted(study["study_instance_uids"]) == sorted([uid_a, uid_p])
    got = {s["series_instance_uid"]: s["role"] for s in study["series"]}
    first, second = e.datasets[0].SeriesInstanceUID, e.datasets[-1].SeriesInstanceUID
    assert got == {first: "ct_arterial", second: "ct_portal_venous"}


# --- real-world header habits -----------------------------------------------------------
def test_exam_across_midnight():
    e = Exam()
    start = 86400 - 100  # 23:58:20
    for t in (start, start + 100, start + 135, start + 300):  # the last two after midnight
        e.series("Abdomen", time=t)
    assert [u.role for u in one(select_datasets(e.datasets)).units] == [
        "ct_non_contrast", "ct_arterial", "ct_portal_venous", "ct_delayed",
    ]
    e = Exam()
    e.series("Abdomen", time=5.0, ContrastBolusStartTime=hms(86400 - 35))  # 40 s, across midnight
    assert one(select_datasets(e.datasets)).units[0].role == "ct_arterial"


def test_private_b_value_and_epi_without_b_value():
    e = Exam(modality="MR")
    (s,) = [e.series("", time=T0, Manufacturer="Philips", RepetitionTime=3000, EchoTime=30)]
    for ds in s:
        ds.private_block(0x2001, "Philips Imaging DD 001", create=True).add_new(0x03, "FL", 800.0)
    e.series("", time=T0 + 10, ScanningSequence=["SE", "EP"], RepetitionTime=4000, EchoTime=58)
    exam = one(select_datasets(e.datasets))
    assert [u.role for u in exam.units] == ["mr_dwi", "mr_dwi"]
    assert exam.units[0].features["b_value_max"] == 800.0


def test_t1_gre_without_tr_te_from_sequence_name():
    e = Exam(modality="MR")
    for t in (T0 - 60, T0, T0 + 40, T0 + 160):
        e.series("", time=t, SequenceName="*fl3d1", ScanningSequence="GR")
    assert [u.role for u in one(select_datasets(e.datasets)).units] == [
        "mr_t1_pre", "mr_arterial", "mr_portal_venous", "mr_transitional",
    ]


def test_phases_sharing_one_time_are_not_guessed():
    e = Exam(modality="MR")
    s = e.series("dyn", time=T0, phases=3, phase_gap=0, **t1_gre())
    for ds in s:
        ds.AcquisitionTime = hms(T0)
    exam = one(select_datasets(e.datasets))
    assert len(exam.units) == 3 and {u.role for u in exam.units} == {"other"}
    assert all("no rule matched" in u.reason for u in exam.units)


@pytest.mark.parametrize(
    "modality, description, role",
    [
        ("CT", "VNC 3mm", "other"),
        ("CT", "Iodine map PV", "other"),
        ("MR", "Locator", "other"),
        ("MR", "ep2d_diff_EADC", "other"),
        ("MR", "T1 fase simple", "mr_t1_pre"),
        ("CT", "Fase simple", "ct_non_contrast"),
    ],
)
def test_more_description_habits(modality, description, role):
    e = Exam(modality=modality)
    e.series(description, time=T0)
    assert one(select_datasets(e.datasets)).units[0].role == role


def test_enhanced_mr_parameters_from_functional_groups():
    e = Exam(modality="MR")
    (s,) = [e.series("", time=T0, slices=1, SOPClassUID="1.2.840.10008.5.1.4.1.1.4.1", NumberOfFrames=40)]
    ds = s[0]
    del ds.ImageOrientationPatient
    timing, echo, orient = Dataset(), Dataset(), Dataset()
    timing.RepetitionTime, timing.FlipAngle = 1500.0, 150
    echo.EffectiveEchoTime = 95.0
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared = Dataset()
    shared.MRTimingAndRelatedParametersSequence = [timing]
    shared.MREchoSequence = [echo]
    shared.PlaneOrientationSequence = [orient]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.EchoPulseSequence = "SPIN"
    unit = one(select_datasets(e.datasets)).units[0]
    assert unit.features["orientation"] == "axial" and unit.role == "mr_t2"


def test_bolus_start_contradicting_descriptions_falls_back_to_order():
    e = Exam()
    wrong = hms(T0 + 95)  # the console stored the tracking scan's start, not the injection
    e.series("Abdomen nativ", time=T0, ContrastBolusStartTime=wrong)
    e.series("Abdomen arteriell", time=T0 + 100, ContrastBolusStartTime=wrong)
    e.series("Abdomen", time=T0 + 135, ContrastBolusStartTime=wrong)
    e.series("Abdomen", time=T0 + 300, ContrastBolusStartTime=wrong)
    exam = one(select_datasets(e.datasets))
    assert [u.role for u in exam.units] == ["ct_non_contrast", "ct_arterial", "ct_portal_venous", "ct_delayed"]
    assert "contradicts the descriptions" in exam.units[2].reason


def test_cli_select_staged_study_by_folder_and_uid(tmp_path, capsys):
    data = tmp_path / "var"
    staging = data / "staging"
    e = Exam()
    uid_a, uid_p = generate_uid(), generate_uid()
    e.series("Abdomen", time=T0, study_uid=uid_a)
    e.series("Abdomen", time=T0 + 35, study_uid=uid_p)
    for ds in e.datasets:
        _save(ds, staging / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm")
    for target in ([str(staging / uid_a)], [uid_p, "--data-dir", str(data)]):
        assert main(["select", *target, "--json"]) == 0
        (study,) = json.loads(capsys.readouterr().out)["studies"]
        assert sorted(study["study_instance_uids"]) == sorted([uid_a, uid_p])
        assert study["recipes"][0]["inputs"] == {"ct_arterial": e.datasets[0].SeriesInstanceUID}
    assert main(["select", "1.2.3.999", "--data-dir", str(data)]) == 2


def test_raw_dataset_without_preamble_is_read(tmp_path):
    from mvi_node.select.series import read_headers

    e = Exam()
    (ds,) = e.series("Arterial", time=T0, slices=1)
    ds.save_as(tmp_path / "raw.dcm", implicit_vr=True, little_endian=True)  # no preamble, no meta
    (tmp_path / "junk.bin").write_bytes(b"\x08\x00garbage" * 3)
    found = read_headers(tmp_path)
    assert [d.SOPInstanceUID for _p, d in found] == [ds.SOPInstanceUID]


def test_axial_series_with_a_stray_coronal_image_is_still_the_arterial_phase():
    """A real GE arterial series held one coronal reference image among its axial slices."""
    e = Exam()
    arterial = e.series("Arterial 5mm", time=T0, slices=12)
    e.series("Portal 5mm", time=T0 + 35, slices=12)
    stray = arterial[0]  # sorts first: it decided the series' orientation before
    stray.ImageOrientationPatient = CORONAL
    stray.ImageType = ["ORIGINAL", "PRIMARY", "REFORMATTED"]
    exam = one(select_datasets(e.datasets))
    series_uid = str(arterial[0].SeriesInstanceUID)
    main = next(u for u in exam.units if u.uid == series_uid)
    split = next(u for u in exam.units if u.uid == f"{series_uid}~1")
    assert main.role == "ct_arterial" and len(main.datasets) == 11
    assert split.role == "other" and split.datasets == [stray]
    assert exam.winners()["ct_arterial"] is main
