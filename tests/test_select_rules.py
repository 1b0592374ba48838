"""The selection rule language: every operator, combinations, files and overrides."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from mvi_node.select.engine import select_datasets
from select_fixtures import Exam
from mvi_node.select.rules import RuleError, RuleSet, compile_condition, load_rules


def _ds(**kw) -> Dataset:
    ds = Dataset()
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


def _test(spec, ds, features=None):
    return compile_condition(spec, "t").test(ds, features or {})[0]


def test_regex_is_case_insensitive_unicode_and_nfkc():
    ds = _ds(SeriesDescription="Leber PORTALVENÖS 5mm")
    assert _test({"tag": "SeriesDescription", "regex": "portalvenös"}, ds)
    # full-width letters (Japanese consoles) match the ASCII pattern
    assert _test({"tag": "SeriesDescription", "regex": "art"}, _ds(SeriesDescription="ＡＲＴ 動脈相"))
    assert _test({"tag": "SeriesDescription", "regex": "動脈相"}, _ds(SeriesDescription="ＡＲＴ 動脈相"))
    assert not _test({"tag": "SeriesDescription", "regex": "arteri"}, ds)


def test_regex_on_multivalued_matches_any_value():
    ds = _ds(ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    assert _test({"tag": "ImageType", "regex": "^localizer$"}, ds)
    assert not _test({"tag": "ImageType", "regex": "^axial$"}, ds)


def test_min_max_inclusive():
    ds = _ds(SliceThickness=5.0)
    assert _test({"tag": "SliceThickness", "min": 3, "max": 5}, ds)
    assert not _test({"tag": "SliceThickness", "max": 4.9}, ds)
    assert not _test({"tag": "SliceThickness", "min": 5.1}, ds)
    assert not _test({"tag": "SliceThickness", "min": 0}, _ds())  # absent: no number


def test_in_not_in_case_insensitive_and_absence():
    ds = _ds(Modality="MR", ImageType=["DERIVED", "PRIMARY", "ADC"])
    assert _test({"tag": "Modality", "in": ["mr", "CT"]}, ds)
    assert not _test({"tag": "Modality", "not_in": ["MR"]}, ds)
    assert _test({"tag": "ImageType", "in": ["adc"]}, ds)
    assert _test({"tag": "ImageType", "not_in": ["LOCALIZER"]}, ds)
    # a missing value is in no set
    assert _test({"tag": "BodyPartExamined", "not_in": ["LIVER"]}, ds)
    assert not _test({"tag": "BodyPartExamined", "in": ["LIVER"]}, ds)


def test_numeric_set_membership():
    assert _test({"tag": "EchoNumbers", "in": [1, 2]}, _ds(EchoNumbers="2"))


def test_present_and_absent():
    ds = _ds(ContrastBolusAgent="Primovist", ContrastBolusRoute="")
    assert _test({"tag": "ContrastBolusAgent", "present": True}, ds)
    assert _test({"tag": "ContrastBolusRoute", "present": False}, ds)  # empty counts as absent
    assert _test({"tag": "ContrastBolusStartTime", "present": False}, ds)
    assert not _test({"tag": "ContrastBolusStartTime", "present": True}, ds)


def test_nested_sequence_path_and_hex_tag():
    item = _ds(CodeMeaning="gadoxetate disodium", CodeValue="C0000")
    ds = _ds(ContrastBolusAgentSequence=[_ds(CodeMeaning="saline"), item])
    assert _test({"tag": "ContrastBolusAgentSequence.CodeMeaning", "regex": "gadoxet"}, ds)
    assert not _test({"tag": "ContrastBolusAgentSequence.CodeValue", "in": ["X"]}, ds)
    ds.add_new((0x0043, 0x1039), "IS", [800, 0, 0, 0])
    assert _test({"tag": "0043,1039", "min": 500}, ds)


def test_all_any_not_nested():
    ds = _ds(Modality="CT", SeriesDescription="Abdomen art 5mm", SliceThickness=5)
    spec = {
        "all": [
            {"tag": "Modality", "in": ["CT"]},
            {"any": [{"tag": "SeriesDescription", "regex": "portal"}, {"tag": "SeriesDescription", "regex": "art"}]},
            {"not": {"tag": "SliceThickness", "max": 2}},
        ]
    }
    assert _test(spec, ds)
    ds.SliceThickness = 1
    assert not _test(spec, ds)


def test_feature_conditions_and_evidence_text():
    cond = compile_condition({"feature": "delay_s", "min": 30, "max": 50}, "t")
    ok, evidence = cond.test(_ds(), {"delay_s": 38.0})
    assert ok and "delay_s=38.0" in evidence[0]
    # context features not computed yet (first pass): neither they nor their negation hold
    assert not cond.test(_ds(), {}, skip_context=True)[0]
    neg = compile_condition({"not": {"feature": "delay_s", "min": 30}}, "t")
    assert not neg.test(_ds(), {}, skip_context=True)[0]
    assert neg.test(_ds(), {"delay_s": 1.0}, skip_context=True)[0]


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"tag": "NoSuchKeyword", "present": True}, "unknown DICOM keyword"),
        ({"feature": "nope", "present": True}, "unknown feature"),
        ({"tag": "Modality", "regex": "("}, "bad regex"),
        ({"tag": "Modality", "equals": "CT"}, "unknown key"),
        ({"tag": "Modality"}, "no operator"),
        ({"all": []}, "non-empty list"),
        ({"all": [{"tag": "Modality", "in": ["CT"]}], "tag": "X"}, "must be alone"),
        ({"tag": "SliceThickness", "min": "thin"}, "must be a number"),
    ],
)
def test_invalid_conditions_are_named(spec, message):
    with pytest.raises(RuleError, match=message):
        compile_condition(spec, "rule 'x'")


def test_shipped_rules_load_and_are_ordered():
    rules = load_rules()
    active = rules.active()
    assert active and all(a.priority >= b.priority for a, b in zip(active, active[1:]))
    assert len({r.name for r in rules.rules}) == len(rules.rules)


def test_site_file_overrides_disables_and_adds(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(
        """
disable = ["projection"]

[[rule]]
name = "localizer"
priority = 5

[[rule]]
name = "bolus-tracking"
enabled = false

[[rule]]
name = "site-research"
role = "other"
priority = 2000
reason = "research series, never clinical input"
when.all = [{ tag = "SeriesDescription", regex = 'research|studie' }]
""",
        encoding="utf-8",
    )
    rules = load_rules(site)
    by_name = {r.name: r for r in rules.rules}
    assert by_name["localizer"].priority == 5 and by_name["localizer"].when is not None
    assert not by_name["projection"].enabled and not by_name["bolus-tracking"].enabled
    assert rules.active()[0].name == "site-research"
    assert rules.sources == ["default.toml", str(site)]


@pytest.mark.parametrize(
    "text, message",
    [
        ('[[rule]]\nname = "x"\nrole = "ct_arterial"\n', "needs role and when"),
        ('[[rule]]\nname = "x"\nrole = "ct_art"\nwhen.all = [{ tag = "Modality", in = ["CT"] }]\n', "not one of"),
        ('disable = ["no-such-rule"]\n', "unknown rule"),
        ('[[rule]]\nrole = "other"\n', "needs a name"),
        ("[[rule]\n", "site.toml"),
        ('[rules]\nx = 1\n', "unknown top-level"),
    ],
)
def test_bad_site_files_are_refused(tmp_path, text, message):
    site = tmp_path / "site.toml"
    site.write_text(text, encoding="utf-8")
    with pytest.raises(RuleError, match=message):
        load_rules(site)


def test_site_override_changes_a_decision(tmp_path):
    exam = Exam()
    exam.series("Abdomen Leber KM 5mm", time=36000, ContrastBolusStartTime="095920")  # 40 s: arterial
    decided = select_datasets(exam.datasets)[0].units[0]
    assert decided.role == "ct_arterial" and decided.rule == "ct-arterial-timing"

    # the site calls anything with "Leber KM" portal venous, above the timing rules
    site = tmp_path / "site.toml"
    site.write_text(
        """
[[rule]]
name = "site-leber-km"
role = "ct_portal_venous"
priority = 650
reason = "site protocol: 'Leber KM' is the portal venous scan"
when.all = [{ tag = "Modality", in = ["CT"] }, { tag = "SeriesDescription", regex = 'leber km' }]
""",
        encoding="utf-8",
    )
    unit = select_datasets(exam.datasets, load_rules(site))[0].units[0]
    assert unit.role == "ct_portal_venous" and unit.rule == "site-leber-km"
    assert str(site) in unit.reason and "Leber KM" in unit.reason

    # overriding a shipped rule by name: the timing rule for arterial now needs >= 45 s
    site.write_text(
        """
[[rule]]
name = "ct-arterial-timing"
when.all = [{ tag = "Modality", in = ["CT"] }, { feature = "delay_s", min = 45, max = 50 }]
""",
        encoding="utf-8",
    )
    unit = select_datasets(exam.datasets, load_rules(site))[0].units[0]
    assert unit.role == "other" and "no rule matched" in unit.reason


def test_ruleset_first_match_respects_only_filter():
    rules = RuleSet()
    rules.merge(
        {
            "rule": [
                {"name": "a", "role": "other", "priority": 2, "when": {"tag": "Modality", "in": ["CT"]}},
                {"name": "b", "role": "seg", "priority": 1, "when": {"tag": "Modality", "in": ["CT"]}},
            ]
        },
        "mem",
    )
    ds = _ds(Modality="CT")
    assert rules.first_match(ds, {})[0].name == "a"
    assert rules.first_match(ds, {}, only=lambda r: r.name == "b")[0].name == "b"


def test_site_rule_on_rank_and_spacing_of_contrast_series(tmp_path):
    exam = Exam()
    exam.series("Abdomen", time=36000)
    exam.series("Abdomen", time=36300)  # native + one contrast scan: its phase is ambiguous
    units = select_datasets(exam.datasets)[0].units
    assert [u.role for u in units] == ["ct_non_contrast", "other"] and "ambiguous" in units[1].reason

    site = tmp_path / "site.toml"
    site.write_text(
        """
[[rule]]
name = "site-single-phase-is-portal"
role = "ct_portal_venous"
priority = 310
reason = "site protocol: a lone contrast scan >= 2 min after the native one is portal venous"
when.all = [
  { tag = "Modality", in = ["CT"] },
  { feature = "contrast_count", in = [1] },
  { feature = "contrast_rank", in = [1] },
  { feature = "gap_prev_s", min = 120 },
  { feature = "timing_phase", not_in = ["non_contrast"] },
]
""",
        encoding="utf-8",
    )
    units = select_datasets(exam.datasets, load_rules(site))[0].units
    assert [u.role for u in units] == ["ct_non_contrast", "ct_portal_venous"]
    assert "gap_prev_s=300.0" in units[1].reason and "site protocol" in units[1].reason
