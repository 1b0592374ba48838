"""Selection that real liver MR protocols need (#12 item 3).

T1 pre-contrast is the pre-contrast acquisition of the dynamic 3D T1 GRE sequence, never
a Dixon map, an in/opposed-phase image or a subtraction; hepatobiliary needs gadoxetate
at 10-30 min, transitional is 2-5 min; b-values come from the standard and the vendors'
private tags (creator checked). Every choice and every refusal says why.
"""

from __future__ import annotations

import json

import pytest
from pydicom.dataset import Dataset

from mvi_node.commands.main import main
from mvi_node.select.engine import select_datasets
from select_fixtures import SEED_NEEDS, Exam, hms, t1_gre
from mvi_node.select.report import build_report

T0 = 10 * 3600.0
AGENT = dict(ContrastBolusAgent="Primovist")


def one(exams):
    (exam,) = exams
    return exam


def unit_of(exam, description: str):
    (u,) = [u for u in exam.units if str(u.ds.SeriesDescription) == description]
    return u


def _dixon_set(e: Exam, time: float, image_types: dict[str, list[str]], names: dict[str, str],
               te: tuple[float, float] = (1.2, 2.4), **extra) -> None:
    """A 3D T1 Dixon acquisition: water, fat, opposed and in-phase reconstructions at
    one time, same TR and flip angle as the dynamic, no fat-suppression pulse, thinner
    slices and more coverage than the fat-sat series (so preferences alone would pick it)."""
    for kind in ("water", "fat", "opp", "in"):
        echo = te[1] if kind == "in" else te[0]
        e.series(names[kind], time=time, slices=24, thickness=3.0,
                 **t1_gre(ScanOptions="", EchoTime=echo, ImageType=image_types[kind]), **extra)


def _dynamic(e: Exam, names=("t1 pre", "t1 art", "t1 pv", "t1 3min", "t1 20min"), **extra) -> None:
    e.series(names[0], time=T0 - 60, **t1_gre(), **extra)
    e.series(names[1], time=T0, **t1_gre(), **AGENT, **extra)
    e.series(names[2], time=T0 + 40, **t1_gre(), **AGENT, **extra)
    e.series(names[3], time=T0 + 150, **t1_gre(), **AGENT, **extra)
    e.series(names[4], time=T0 - 30 + 1200, **t1_gre(FlipAngle=25), **AGENT, **extra)


GE_TYPES = {"water": ["DERIVED", "PRIMARY", "WATER"], "fat": ["DERIVED", "PRIMARY", "FAT"],
            "opp": ["DERIVED", "PRIMARY", "OUT PHASE"], "in": ["DERIVED", "PRIMARY", "IN PHASE"]}
SIEMENS_TYPES = {"water": ["DERIVED", "PRIMARY", "DIXON", "W"], "fat": ["DERIVED", "PRIMARY", "DIXON", "F"],
                 "opp": ["DERIVED", "PRIMARY", "DIXON", "OPP_PHASE"], "in": ["DERIVED", "PRIMARY", "DIXON", "IN_PHASE"]}
PLAIN_TYPES = {k: ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"] for k in ("water", "fat", "opp", "in")}


@pytest.mark.parametrize("image_types, names", [
    (GE_TYPES, {"water": "Ax LAVA-Flex pre", "fat": "Ax LAVA-Flex pre", "opp": "Ax LAVA-Flex pre",
                "in": "Ax LAVA-Flex pre"}),
    (SIEMENS_TYPES, {"water": "dixon pre", "fat": "dixon pre", "opp": "dixon pre", "in": "dixon pre"}),
    # no vendor ImageType: in/opposed from the EchoTime pair, water/fat from the description
    (PLAIN_TYPES, {"water": "T1W_mDIXON_W pre", "fat": "T1W_mDIXON_F pre", "opp": "T1W_mDIXON pre",
                   "in": "T1W_mDIXON pre"}),
], ids=["ge", "siemens", "plain"])
def test_dixon_before_the_fat_sat_pre_contrast_selects_the_fat_sat_series(image_types, names):
    e = Exam(modality="MR")
    _dixon_set(e, T0 - 150, image_types, names, MagneticFieldStrength=3.0)
    _dynamic(e, MagneticFieldStrength=3.0)
    exam = one(select_datasets(e.datasets))
    pre = unit_of(exam, "t1 pre")
    assert pre.role == "mr_t1_pre", pre.reason
    dixon = [u for u in exam.units if u.ds.SeriesNumber <= 4]
    assert [u.role for u in dixon] == ["other"] * 4, [u.reason for u in dixon]
    kinds = [u.features["image_kind"] for u in dixon]
    assert kinds == ["water", "fat", "opposed_phase", "in_phase"]
    for u in dixon:
        assert u.features["image_kind"].replace("_", "-").split("-")[0] in u.reason  # the refusal says what it is
    assert [unit_of(exam, n).role for n in ("t1 art", "t1 pv", "t1 3min", "t1 20min")] == [
        "mr_arterial", "mr_portal_venous", "mr_transitional", "mr_hepatobiliary"]
    assert "same sequence" in pre.reason
    report = build_report([exam], needs=SEED_NEEDS)["studies"][0]
    assert report["recipes"][0]["inputs"]["mr_t1_pre"] == pre.uid


def test_in_opposed_pair_recognised_by_echo_times_at_1_5_t():
    """At 1.5 T fat and water are opposed at 2.3 ms and in phase at 4.6 ms."""
    e = Exam(modality="MR")
    kw = dict(MagneticFieldStrength=1.5, ImagingFrequency=63.87)
    for te in (2.3, 4.6):
        e.series("t1 3d dual", time=T0 - 150, **t1_gre(RepetitionTime=6.8, EchoTime=te, ScanOptions=""), **kw)
    _dynamic(e, **kw)
    exam = one(select_datasets(e.datasets))
    opp, inn = exam.units[0], exam.units[1]
    assert (opp.features["image_kind"], inn.features["image_kind"]) == ("opposed_phase", "in_phase")
    assert "EchoTime" in opp.features["image_kind_basis"]
    assert opp.role == inn.role == "other"
    assert unit_of(exam, "t1 pre").role == "mr_t1_pre"


def test_single_echo_dynamic_at_an_opposed_phase_echo_time_is_not_a_dixon_image():
    # VIBE at 3 T often uses TE ~1.2 ms (opposed phase): one echo is no chemical-shift pair
    e = Exam(modality="MR")
    _dynamic(e, MagneticFieldStrength=3.0)
    exam = one(select_datasets(e.datasets))
    assert {u.features["image_kind"] for u in exam.units} == {""}
    assert unit_of(exam, "t1 pre").role == "mr_t1_pre"


def test_pre_contrast_of_another_sequence_is_refused_with_the_difference():
    e = Exam(modality="MR")
    e.series("t1 pre nofs", time=T0 - 120, slices=24, thickness=3.0, **t1_gre(ScanOptions="", FlipAngle=9))
    _dynamic(e)
    exam = one(select_datasets(e.datasets))
    other = unit_of(exam, "t1 pre nofs")
    assert other.role == "other"
    assert "fat suppression" in other.reason and "flip" in other.reason
    assert unit_of(exam, "t1 pre").role == "mr_t1_pre"


def test_water_maps_are_the_dynamic_when_every_phase_is_a_water_map():
    """GE LAVA-Flex / Philips mDIXON dynamics are water images: then the water pre is the T1 pre."""
    e = Exam(modality="MR")
    water = dict(ImageType=["DERIVED", "PRIMARY", "WATER"])
    e.series("Ax LAVA-Flex fat pre", time=T0 - 60, **t1_gre(ImageType=["DERIVED", "PRIMARY", "FAT"]))
    _dynamic(e, names=("lava pre", "lava art", "lava pv", "lava 3min", "lava 20min"), **water)
    exam = one(select_datasets(e.datasets))
    assert unit_of(exam, "lava pre").role == "mr_t1_pre"
    assert unit_of(exam, "Ax LAVA-Flex fat pre").role == "other"


def test_subtraction_is_never_a_phase():
    e = Exam(modality="MR")
    _dynamic(e)
    e.series("t1 art SUB", time=T0, **t1_gre(ImageType=["DERIVED", "PRIMARY", "SUBTRACTION"]), **AGENT)
    e.series("Series 9", time=T0 + 40, **t1_gre(ImageType=["DERIVED", "SECONDARY", "SUB"]), **AGENT)
    exam = one(select_datasets(e.datasets))
    for name in ("t1 art SUB", "Series 9"):
        u = unit_of(exam, name)
        assert u.role == "other" and u.candidate_role is None and "subtraction" in u.reason
    assert unit_of(exam, "t1 art").role == "mr_arterial"


# --- hepatobiliary and transitional phases ---------------------------------------------
def _late_exam(agent: str | None, late_delay: float, code: str | None = None, trans_delay: float = 180) -> Exam:
    """pre, arterial (30 s), portal (70 s), a 'transitional' and a late series; times only."""
    e = Exam(modality="MR")
    post = {"ContrastBolusAgent": agent} if agent else {}
    inj = T0 - 30
    e.series("", time=inj - 60, **t1_gre())
    for d in (30, 70, trans_delay, late_delay):
        e.series("", time=inj + d, ContrastBolusStartTime=hms(inj), **t1_gre(), **post)
    if code:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "C0", "99LOCAL", code
        for ds in e.datasets:
            ds.ContrastBolusAgentSequence = [item]
    return e


@pytest.mark.parametrize("agent, code", [("Primovist", None), ("Eovist", None), ("Gd-EOB-DTPA", None),
                                         (None, "Gadoxetate disodium")])
def test_hepatobiliary_needs_gadoxetate_and_10_to_30_min(agent, code):
    exam = one(select_datasets(_late_exam(agent, 1200, code).datasets))
    roles = [u.role for u in exam.units]
    assert roles == ["mr_t1_pre", "mr_arterial", "mr_portal_venous", "mr_transitional", "mr_hepatobiliary"]
    hbp, trans = exam.units[-1], exam.units[-2]
    assert "10-30 min" in hbp.reason and "1200 s after ContrastBolusStartTime" in hbp.reason
    assert "agent: hepatobiliary" in hbp.reason and (agent or code) in hbp.reason
    assert "2-5 min" in trans.reason and "180 s" in trans.reason


def test_extracellular_agent_at_20_min_is_not_hepatobiliary_and_says_so():
    exam = one(select_datasets(_late_exam("Dotarem", 1200, trans_delay=120).datasets))
    late = exam.units[-1]
    assert "mr_hepatobiliary" not in [u.role for u in exam.units]
    # a delayed-phase candidate that lost to the one closer to 3 min; its reason keeps the refusal
    assert late.role == "other" and late.candidate_role == "mr_transitional"
    assert "not hepatobiliary" in late.reason and "extracellular" in late.reason
    report = build_report([exam], needs=SEED_NEEDS)["studies"][0]
    entry = next(s for s in report["series"] if s["series_instance_uid"] == late.uid)
    assert "not hepatobiliary" in entry["reason"]


@pytest.mark.parametrize("delay, role, words", [
    (420, "other", "after the transitional window"),  # 7 min: neither transitional nor hepatobiliary
    (2700, "other", "later than the hepatobiliary window"),  # 45 min
    (900, "mr_hepatobiliary", "10-30 min"),
])
def test_late_series_outside_the_windows_are_refused_with_the_window(delay, role, words):
    exam = one(select_datasets(_late_exam("Primovist", delay).datasets))
    late = exam.units[-1]
    assert late.role == role and words in late.reason, late.reason
    assert exam.units[-2].role == "mr_transitional"


def test_transitional_window_is_2_to_5_min():
    exam = one(select_datasets(_late_exam("Primovist", 1200, trans_delay=280).datasets))
    assert exam.units[-2].role == "mr_transitional"
    exam = one(select_datasets(_late_exam("Primovist", 1200, trans_delay=400).datasets))
    assert exam.units[-2].role == "other" and "2-5 min" in exam.units[-2].reason


# --- b-values ----------------------------------------------------------------------------
def _dwi(maker: str, tag_writer, b_values=(50, 800)) -> Exam:
    """A DWI series (one slice per b-value, no DiffusionBValue) tagged by ``tag_writer``."""
    e = Exam(modality="MR")
    s = e.series("Ax DWI", time=T0, slices=len(b_values), Manufacturer=maker, ScanningSequence="EP",
                 RepetitionTime=5000, EchoTime=62)
    for ds, b in zip(s, b_values):
        ds.ImagePositionPatient = [0.0, 0.0, 0.0]
        tag_writer(ds, b)
    return e


def _ge(ds, b):
    # GE (0043,xx39) IS: b in the first value; some software versions add 1e9
    ds.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x39, "IS", [1_000_000_000 + b, 8, 0, 0])


def _siemens(ds, b):
    ds.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0C, "IS", b)


def _philips(ds, b):
    ds.private_block(0x2001, "Philips Imaging DD 001", create=True).add_new(0x03, "FL", float(b))


def _canon(ds, b):
    ds.ImageComments = f"b={b}(0.445,0.000,0.895)"


@pytest.mark.parametrize("maker, writer, source", [
    ("GE MEDICAL SYSTEMS", _ge, "GEMS_PARM_01 (0043,xx39)"),
    ("SIEMENS", _siemens, "SIEMENS MR HEADER (0019,xx0C)"),
    ("Philips", _philips, "Philips Imaging DD 001 (2001,xx03)"),
    ("CANON_MEC", _canon, "ImageComments"),
])
def test_b_value_from_the_vendor_private_tag_only(maker, writer, source):
    exam = one(select_datasets(_dwi(maker, writer).datasets))
    (u,) = exam.units
    assert u.features["b_value_max"] == 800.0 and u.role == "mr_dwi"
    assert source in u.features["b_value_source"] and source in u.reason


def test_private_b_value_in_another_block_and_under_the_wrong_creator():
    def moved(ds, b):  # the creator reserved block 0x11: element (0043,1139)
        ds.add_new((0x0043, 0x0010), "LO", "SOME_OTHER_CREATOR")
        ds.add_new((0x0043, 0x0011), "LO", "GEMS_PARM_01")
        ds.add_new((0x0043, 0x1039), "IS", [9999, 0, 0, 0])  # another creator's element: not a b-value
        ds.add_new((0x0043, 0x1139), "IS", [b, 8, 0, 0])
    (u,) = one(select_datasets(_dwi("GE MEDICAL SYSTEMS", moved).datasets)).units
    assert u.features["b_value_max"] == 800.0

    def foreign(ds, b):
        ds.add_new((0x0043, 0x0010), "LO", "SOME_OTHER_CREATOR")
        ds.add_new((0x0043, 0x1039), "IS", [b, 0, 0, 0])
    (u,) = one(select_datasets(_dwi("GE MEDICAL SYSTEMS", foreign).datasets)).units
    assert u.features["b_value_max"] is None


def test_private_b_value_read_back_from_files_as_implicit_vr(tmp_path):
    """Implicit VR files: pydicom knows the creators' VRs, or leaves UN bytes; both decode."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ImplicitVRLittleEndian

    from mvi_node.select.engine import select_path

    for maker, writer in (("Philips", _philips), ("GE MEDICAL SYSTEMS", _ge)):
        for ds in _dwi(maker, writer).datasets:
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            ds.save_as(tmp_path / maker[:2] / f"{ds.SOPInstanceUID}.dcm", implicit_vr=True, little_endian=True) \
                if (tmp_path / maker[:2]).mkdir(exist_ok=True) is None else None
    for sub in ("Ph", "GE"):
        (u,) = one(select_path(tmp_path / sub)).units
        assert u.features["b_value_max"] == 800.0, sub


def test_select_json_gives_a_reason_for_every_choice_and_refusal(tmp_path, capsys):
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    e = Exam(modality="MR")
    _dixon_set(e, T0 - 150, SIEMENS_TYPES, {"water": "dixon W", "fat": "dixon F", "opp": "dixon opp",
                                            "in": "dixon in"}, MagneticFieldStrength=3.0)
    _dynamic(e, MagneticFieldStrength=3.0, ContrastBolusStartTime=hms(T0 - 30))
    e.series("t1 art SUB", time=T0, **t1_gre(ImageType=["DERIVED", "PRIMARY", "SUBTRACTION"]), **AGENT)
    ecf = _late_exam("Dotarem", 1200, trans_delay=120)  # a second exam: extracellular agent, 20 min series
    for ds in ecf.datasets:
        ds.PatientID, ds.AccessionNumber = "P2", "A2"
    for ds in e.datasets + ecf.datasets:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(tmp_path / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=False)
    assert main(["select", str(tmp_path), "--json"]) == 0
    study, other = sorted(json.loads(capsys.readouterr().out)["studies"], key=lambda st: st["patient_id"])
    assert other["agent"] == "extracellular" and all(s["reason"] for s in other["series"])
    late = max(other["series"], key=lambda s: s["delay_s"] or 0)
    assert late["role"] != "mr_hepatobiliary" and "not hepatobiliary" in late["reason"]
    assert study["dynamic_sequence"].startswith("TR 4 ms, TE 1.9 ms, flip 12°, fat-suppressed")
    by_desc = {s["series_description"]: s for s in study["series"]}
    assert all(s["reason"] for s in study["series"])
    assert "same sequence as the dynamic phases" in by_desc["t1 pre"]["reason"]
    assert "ImageType W" in by_desc["dixon W"]["reason"] and by_desc["dixon W"]["role"] == "other"
    assert "ImageType OPP_PHASE" in by_desc["dixon opp"]["reason"]
    assert "subtraction" in by_desc["t1 art SUB"]["reason"]
    assert "10-30 min" in by_desc["t1 20min"]["reason"] or "hepatobiliary" in by_desc["t1 20min"]["reason"]
    assert by_desc["t1 20min"]["role"] == "mr_hepatobiliary" and "1200 s" in by_desc["t1 20min"]["reason"]
    assert study["recipes"] == [] or "mr_t1_pre" in str(study)


@pytest.mark.parametrize("name", ["普美显", "钆塞酸二钠", "EOB・プリモビスト", "プリモビスト", "Gadoxetic acid"])
def test_gadoxetate_names_in_other_languages(name):
    from mvi_node.select.series import agent_class

    assert agent_class(name) == "hepatobiliary"
    assert agent_class("钆喷酸葡胺") != "hepatobiliary"  # gadopentetate (Magnevist) is extracellular


def test_two_unlabelled_images_at_one_echo_time_are_not_guessed():
    """Philips-style plain ImageTypes, opaque names: the opposed echo and a water map share
    TE 1.2 ms; only the in-phase echo (alone at 2.4 ms) is classified, the others are judged
    by the sequence comparison (no fat suppression: not the dynamic's pre)."""
    e = Exam(modality="MR")
    _dixon_set(e, T0 - 150, PLAIN_TYPES, {k: "Series 3" for k in ("water", "fat", "opp", "in")},
               MagneticFieldStrength=3.0)
    _dynamic(e, MagneticFieldStrength=3.0)
    exam = one(select_datasets(e.datasets))
    dixon = exam.units[:4]
    assert [u.features["image_kind"] for u in dixon] == ["", "", "", "in_phase"]
    assert all(u.role == "other" for u in dixon)
    assert all("fat suppression no vs yes" in u.reason for u in dixon[:3])
    assert unit_of(exam, "t1 pre").role == "mr_t1_pre"


@pytest.mark.parametrize("vendor", ["siemens", "canon"])
def test_enhanced_multiframe_exam_with_dixon_and_subtraction(tmp_path, vendor):
    """Enhanced MR frames: fat suppression from SpectrallySelectedSuppression, echo times
    from EffectiveEchoTime; roles and recipe inputs must match the generator's manifest."""
    from mvi_node.synth.manifest import write_manifest
    from mvi_node.synth import make_exam
    from test_select_synth import _check

    entry = make_exam(tmp_path, "mr", 8, 0, vendor=vendor, agent="gd-eob", matrix=32, hard_cases="all",
                      enhanced_multiframe=True)
    write_manifest(tmp_path, {"generator": "test"}, [entry])
    assert _check(tmp_path) > 0


@pytest.mark.parametrize("frame_type, kind", [
    (["ORIGINAL", "PRIMARY", "DIXON", "WATER"], "water"),  # Philips Enhanced mDIXON (dcm2niix #1022)
    (["ORIGINAL", "PRIMARY", "DIXON", "FAT_FRACTION"], "fat_fraction"),
    (["DERIVED", "PRIMARY", "VOLUME", "SUBTRACTION"], "subtraction"),  # Enhanced value 4: derived pixel contrast
    (["ORIGINAL", "PRIMARY", "VOLUME", "NONE"], ""),
])
def test_enhanced_frame_type_names_the_map(frame_type, kind):
    from mvi_node.select.mr_headers import kind_from_image_type

    ds = Dataset()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "T1", "MIXED"]
    ds.FrameType = frame_type
    assert kind_from_image_type(ds)[0] == kind


@pytest.mark.parametrize("description, kind", [
    ("t1_vibe_dixon_tra_bh_W", "water"), ("t1_vibe_dixon_tra_bh_F", "fat"), ("t1_vibe_dixon_tra_in", "in_phase"),
    ("t1_vibe_dixon_tra_opp", "opposed_phase"), ("WATER: Ax LAVA-Flex", "water"), ("FAT: Ax LAVA-Flex", "fat"),
    ("InPhase: Ax LAVA-Flex", "in_phase"), ("OutPhase: Ax LAVA-Flex", "opposed_phase"),
    ("T1W_mDIXON_IP", "in_phase"), ("T1W_mDIXON_OP", "opposed_phase"), ("Ax Dual Echo", "in_opposed"),
    ("t1_fl2d_opp-in_tra", "in_opposed"), ("t1_vibe_fs_tra_art_SUB", "subtraction"), ("减影 动脉期", "subtraction"),
    ("mDIXON FF", "fat_fraction"), ("T1 water excitation", ""), ("t1_vibe_fs_tra fat sat", ""), ("in 3D", ""),
])
def test_kind_from_the_description_last_resort(description, kind):
    from mvi_node.select.mr_headers import kind_from_description

    ds = Dataset()
    ds.SeriesDescription = description
    assert kind_from_description(ds)[0] == kind


def test_ordinary_dynamic_descriptions_of_every_vendor_and_language_name_no_map():
    from mvi_node.select.mr_headers import kind_from_description
    from mvi_node.synth.vendors import PHASE_WORDS, VENDOR_PROFILES

    for vendor in VENDOR_PROFILES.values():
        for lang in PHASE_WORDS:
            for key in ("pre", "early_arterial", "arterial", "portal", "transitional", "hepatobiliary", "dynamic"):
                ds = Dataset()
                ds.SeriesDescription = vendor.mr_name(key, lang)
                assert kind_from_description(ds) == ("", ""), ds.SeriesDescription


@pytest.mark.parametrize("change, same", [
    (dict(EchoTime=2.15), True), (dict(RepetitionTime=4.5), True), (dict(FlipAngle=14), True),
    (dict(EchoTime=2.4), False), (dict(RepetitionTime=6.8), False), (dict(FlipAngle=8), False),
])
def test_pre_contrast_sequence_tolerances(change, same):
    e = Exam(modality="MR")
    e.series("t1 pre", time=T0 - 60, **t1_gre(**change))
    for name, t in (("t1 art", T0), ("t1 pv", T0 + 40), ("t1 3min", T0 + 150)):
        e.series(name, time=t, **t1_gre(), **AGENT)
    exam = one(select_datasets(e.datasets))
    pre = unit_of(exam, "t1 pre")
    assert (pre.role == "mr_t1_pre") == same, pre.reason
    assert pre.features["sequence_match"] == ("same" if same else pre.features["sequence_match"])


def test_two_series_a_fraction_of_a_millisecond_apart_are_no_echo_pair():
    e = Exam(modality="MR")
    for te in (1.9, 2.15):  # two pre-contrast series at one time (a repeat), not a chemical-shift pair
        e.series("t1 pre", time=T0 - 60, **t1_gre(EchoTime=te), MagneticFieldStrength=1.5)
    assert {u.features["image_kind"] for u in one(select_datasets(e.datasets)).units} == {""}


def test_lava_flex_dynamic_with_four_reconstructions_per_phase():
    """GE LAVA-Flex: each phase exported as water, fat, in and out of phase; the water
    maps are the dynamic (pre included), the other three never a phase."""
    e = Exam(modality="MR")
    inj = T0 - 30
    for name, delay in (("pre", -60), ("art", 30), ("pv", 70), ("3min", 180), ("20min", 1200)):
        for kind, itype in GE_TYPES.items():
            te = 2.3 if kind == "in" else 1.15
            e.series(f"{kind} {name}", time=inj + delay, MagneticFieldStrength=3.0,
                     **t1_gre(ScanOptions="", EchoTime=te, ImageType=itype, FlipAngle=25 if name == "20min" else 12),
                     **({} if name == "pre" else AGENT))
    exam = one(select_datasets(e.datasets))
    roles = {str(u.ds.SeriesDescription): u.role for u in exam.units}
    assert [roles[f"water {n}"] for n in ("pre", "art", "pv", "3min", "20min")] == [
        "mr_t1_pre", "mr_arterial", "mr_portal_venous", "mr_transitional", "mr_hepatobiliary"]
    assert {r for d, r in roles.items() if not d.startswith("water")} == {"other"}
    assert "water maps" in exam.dynamic_sequence
