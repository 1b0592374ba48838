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
