"""Cohorts (#13 parts 1-2): a CSV or a synth folder of DICOM exams -> rows with named problems,
patient-level splits, and training through the serving path into a servable model folder."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

from mvi_node.cohort import (CohortError, CohortRow, assign_splits, check_cohort, iter_exams, open_cohort,
                             parse_label, prepare_rows)
from mvi_node.cohort.prepare import RowClinicalSource
from mvi_node.infer.catalog import RecipeCatalog
from mvi_node.infer.recipe import TrainingExample
from mvi_node.select.engine import Exam

MATRIX = 64
LABS = {"afp_ng_ml": "120", "child_pugh": "A", "hbsag": "1", "hcv": "0"}


@pytest.fixture(scope="module")
def exams(tmp_path_factory):
    """Four annotated CT exams (MVI 1, 0, 1, 0), one without annotation, one whose
    arterial series was deleted: DICOM only, their manifest entries kept for the test."""
    from mvi_node.synth import make_exam

    root = tmp_path_factory.mktemp("exams")
    good = [make_exam(root, "ct", seed=11, index=i, mvi=bool(i % 2 == 0), matrix=MATRIX, hard_cases="none")
            for i in range(4)]
    no_roi = make_exam(root, "ct", seed=11, index=4, mvi=False, matrix=MATRIX, hard_cases="none",
                       annotations="none")
    broken = root / "broken"
    shutil.copytree(root / good[0]["dicom_dir"], broken)
    arterial = good[0]["recipes"]["ct_ap_resnet18"]["ct_arterial"]
    shutil.rmtree(broken / f"S{good[0]['series_detail'][arterial]['number']:04d}")
    shutil.rmtree(root / "clinical")  # a CSV cohort's clinical values come from its own columns
    return {"root": root, "good": good, "no_roi": no_roi, "broken": broken}


@pytest.fixture(scope="module")
def recipe():
    return RecipeCatalog.discover().get("ct_ap_resnet18")


def _csv(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _identifiers(exams) -> set[str]:
    studies = [*exams["good"], exams["no_roi"]]
    return {s["patient_id"] for s in studies} | {s["accession_number"] for s in studies}


# --- reading cohorts --------------------------------------------------------------------
def test_csv_rows_paths_labels_and_clinical_columns(tmp_path, exams):
    g = exams["good"]
    csv_dir = tmp_path / "a" / "b"
    csv_dir.mkdir(parents=True)
    rel = Path(os.path.relpath(exams["root"] / g[1]["dicom_dir"], csv_dir))
    csv = _csv(csv_dir / "cohort.csv", [
        "Path;Patient_ID;MVI;mvi_grade;early_recurrence;afp_ng_ml;split",  # semicolons, any case
        f"{exams['root'] / g[0]['dicom_dir']};P1;1;m2;yes;120;Train",
        f"{rel.as_posix()};P2;0;M0;0;;",
    ])
    # a folder holding cohort.csv is the same cohort as the file
    for where in (csv, csv.parent):
        cohort = open_cohort(where)
        assert cohort.kind == "csv" and len(cohort) == 2
    a, b = cohort.rows
    assert (a.row, a.labels, a.split, a.clinical) == (1, {"mvi": 1, "mvi_grade": "M2", "early_recurrence": 1},
                                                      "train", {"afp_ng_ml": "120"})
    assert b.path.resolve() == (exams["root"] / g[1]["dicom_dir"]).resolve()  # relative to the CSV's folder
    assert b.labels == {"mvi": 0, "mvi_grade": "M0", "early_recurrence": 0} and b.split == "" and not b.problems
    assert "P1" not in repr(a) and a.key == "row 1" and a.patient_group and a.patient_group != b.patient_group


def test_label_values():
    assert parse_label("mvi", "1") == 1 and parse_label("mvi", True) == 1 and parse_label("mvi", " ") is None
    assert parse_label("mvi_grade", "m1") == "M1" and parse_label("early_recurrence", 0) == 0
    for column, value in (("mvi", "2"), ("mvi_grade", "M3"), ("early_recurrence", "maybe")):
        with pytest.raises(ValueError, match="unknown label value"):
            parse_label(column, value)


def test_a_synth_folder_is_a_cohort_with_the_manifests_rows_and_labels(tmp_path):
    from mvi_node.commands.main import main
    from mvi_node.synth import generate_ct

    manifest = generate_ct(tmp_path / "synth", 3, seed=4, matrix=MATRIX, hard_cases="none")
    cohort = open_cohort(tmp_path / "synth")
    assert cohort.kind == "synth" and len(cohort) == len(manifest["studies"])
    for row, study in zip(cohort.rows, manifest["studies"]):
        assert row.path == tmp_path / "synth" / study["dicom_dir"]
        assert row.labels == {"mvi": int(study["mvi"]), "mvi_grade": study["grade"]}
        assert (row.patient_id, row.accession_number, row.split, row.problems) == (
            study["patient_id"], study["accession_number"], "", ())
        # clinical values fall back to the folder's clinical/ (as the served node's file source)
        record = RowClinicalSource(row, cohort.clinical).lookup("", "")
        assert record["afp_ng_ml"] == study["clinical"]["afp_ng_ml"]
    # the same exams in a CSV give the same rows
    csv = _csv(tmp_path / "site.csv", ["path,patient_id,accession_number,mvi,mvi_grade"] + [
        f"synth/{s['dicom_dir']},{s['patient_id']},{s['accession_number']},{int(s['mvi'])},{s['grade']}"
        for s in manifest["studies"]])
    same = open_cohort(csv)
    assert [(r.path, r.labels, r.patient_group) for r in same] == [(r.path, r.labels, r.patient_group) for r in cohort]
    # a clean cohort: cohort check exits 0
    assert main(["cohort", "check", str(tmp_path / "synth")]) == 0


def test_not_a_cohort(tmp_path):
    with pytest.raises(CohortError, match="not a cohort"):
        open_cohort(tmp_path)
    with pytest.raises(CohortError, match="no 'path' column"):
        open_cohort(_csv(tmp_path / "c.csv", ["folder,mvi", "x,1"]))


# --- bad rows --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_csv(exams, tmp_path_factory):
    g, root = exams["good"], exams["root"]
    return _csv(tmp_path_factory.mktemp("bad") / "cohort.csv", [
        "path,patient_id,mvi,afp_ng_ml,child_pugh,hbsag,hcv",
        f"{root / g[0]['dicom_dir']},A1,1,120,A,1,0",   # 1 fine
        f"{root / 'nowhere'},A2,0,5,A,0,0",             # 2 missing folder
        f"{root / g[1]['dicom_dir']},A3,maybe,5,A,0,0",  # 3 unknown label value
        f"{exams['broken']},A4,1,5,A,0,0",               # 4 no eligible series (arterial deleted)
        f"{root / exams['no_roi']['dicom_dir']},A5,0,5,A,0,0",  # 5 no ROI (no annotation)
    ])


def test_bad_rows_name_row_column_and_reason(bad_csv, recipe, exams):
    report = check_cohort(open_cohort(bad_csv), recipe)
    problems = {o.row.row: o.problems for o in report.outcomes}
    assert problems[1] == () and report.outcomes[0].usable
    assert problems[2] == (CohortError(2, "path", "folder not found"),)
    assert problems[3] == (CohortError(3, "mvi", "unknown label value 'maybe' (expected 0 or 1)"),)
    [p4], [p5] = problems[4], problems[5]
    assert (p4.row, p4.column) == (4, "path") and p4.reason.startswith("no eligible series: no series holds role "
                                                                       "ct_arterial")
    assert (p5.row, p5.column) == (5, "path") and p5.reason.startswith("no ROI: ")
    first = report.outcomes[0]
    assert first.exam_found and first.roi_source == "seg" and first.label == 1 and first.series
    assert not report.outcomes[1].exam_found and report.outcomes[3].exam_found
    assert not report.ok and len(report.unusable) == 4
    assert report.summary()["left_out"] == {"folder not found": 1, "mvi: unknown label value": 1,
                                            "no eligible series": 1, "no ROI": 1}


def test_cohort_check_command_exits_non_zero_and_prints_the_problems(bad_csv, exams, capsys):
    from mvi_node.commands.main import main

    assert main(["cohort", "check", str(bad_csv)]) == 1
    out, err = capsys.readouterr()
    assert "row 2, column path: folder not found" in out
    assert "row 3, column mvi: unknown label value 'maybe'" in out
    assert "row 4, column path: no eligible series" in out and "row 5, column path: no ROI" in out
    assert "5 rows, 1 usable, 4 unusable" in out
    assert not any(i in out + err for i in _identifiers(exams) | {"A1", "nowhere"})
    assert main(["cohort", "check", str(bad_csv), "--json", "--recipe", "ct_ap_resnet18"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [r["usable"] for r in doc["rows"]] == [True, False, False, False, False]
    assert doc["rows"][1]["problems"] == [{"row": 2, "column": "path", "reason": "folder not found"}]
    assert doc["summary"]["usable_rows"] == 1 and doc["summary"]["prevalence"] == 1.0
    assert main(["cohort", "check", str(bad_csv.parent / "absent.csv")]) == 2


def test_iter_exams_gives_the_selected_exam_or_the_problem(bad_csv, recipe):
    pairs = list(iter_exams(open_cohort(bad_csv), recipe))
    assert [r.row for r, _ in pairs] == [1, 2, 3, 4, 5]
    assert isinstance(pairs[0][1], Exam) and "ct_arterial" in pairs[0][1].winners()
    assert pairs[1][1] == CohortError(2, "path", "folder not found")
    assert isinstance(pairs[2][1], CohortError) and pairs[2][1].column == "mvi"
    assert isinstance(pairs[3][1], Exam)  # selection found the exam; the engine says why it cannot run


# --- splits ----------------------------------------------------------------------------
def _examples(groups: int = 30, seed: int = 0) -> list[TrainingExample]:
    rng = random.Random(seed)
    out, row = [], 0
    for g in range(groups):
        for _ in range(rng.choice([1, 1, 2, 3])):
            row += 1
            out.append(TrainingExample(f"row {row}", f"patient{g:02d}", {"mvi": g % 2}, "", None, row=row))
    return out


def test_split_is_by_patient_stratified_and_seeded():
    examples = _examples()
    a = assign_splits(examples, seed=3, validation=0.2, test=0.2, label="mvi")
    by_group: dict[str, set[str]] = {}
    for e in a:
        by_group.setdefault(e.group, set()).add(e.split)
    assert all(len(s) == 1 for s in by_group.values())  # no patient straddles
    for split in ("train", "validation", "test"):
        assert {e.labels["mvi"] for e in a if e.split == split} == {0, 1}
    assert [e.split for e in assign_splits(examples, seed=3, validation=0.2, test=0.2, label="mvi")] == \
        [e.split for e in a]
    shuffled = examples[:]
    random.Random(1).shuffle(shuffled)  # row order does not matter, only the seed
    again = {e.row: e.split for e in assign_splits(shuffled, seed=3, validation=0.2, test=0.2, label="mvi")}
    assert again == {e.row: e.split for e in a}
    other = assign_splits(examples, seed=4, validation=0.2, test=0.2, label="mvi")
    assert [e.split for e in other] != [e.split for e in a]


def test_split_column_wins_and_a_patient_never_straddles():
    from dataclasses import replace

    examples = _examples()
    first = examples[0]
    twin = [e for e in examples if e.group == first.group]
    named = [replace(e, split="test") if e.row == first.row else e for e in examples]
    named = [replace(e, split="validation") if e.group == "patient05" and e.row % 2 else e for e in named]
    out = {e.row: e for e in assign_splits(named, seed=0, validation=0.2, label="mvi")}
    assert all(out[e.row].split == "test" for e in twin)  # the whole patient follows its named row
    assert {out[e.row].split for e in examples if e.group == "patient05"} == {"validation"}
    conflict = [replace(e, split="train" if i == 0 else "test") for i, e in enumerate(twin)] + examples[len(twin):]
    if len(twin) > 1:
        with pytest.raises(CohortError) as err:
            assign_splits(conflict)
        assert (err.value.column, err.value.row) == ("split", twin[1].row)
    twins = [TrainingExample("row 1", "g", {"mvi": 1}, "train", None, row=1),
             TrainingExample("row 2", "g", {"mvi": 1}, "validation", None, row=2)]
    with pytest.raises(CohortError, match="row 2, column split: 'validation', but the same patient's row 1"):
        assign_splits(twins)


def test_csv_split_values_and_patient_groups(tmp_path, exams):
    folder = exams["root"] / exams["good"][0]["dicom_dir"]
    cohort = open_cohort(_csv(tmp_path / "c.csv", [
        "path,patient_id,mvi,split", f"{folder},P,1,val", f"{folder},P,1,", f"{folder},Q,0,later"]))
    a, b, c = cohort.rows
    assert a.split == "validation" and a.patient_group == b.patient_group != c.patient_group
    assert c.problems == (CohortError(3, "split", "unknown split 'later' (expected train, validation or test)"),)


# --- training --------------------------------------------------------------------------
def test_train_from_a_csv_cohort_writes_a_servable_model(tmp_path, exams, recipe, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    import tomllib

    from mvi_node.commands.main import main
    from mvi_node.infer import ModelRegistry

    g, root = exams["good"], exams["root"]
    labs = ",".join(LABS.values())
    lines = ["path,patient_id,accession_number,mvi,afp_ng_ml,child_pugh,hbsag,hcv,split"]
    for i, (s, split) in enumerate(zip(g, ["train", "validation", "validation", "train"])):
        lines.append(f"{root / s['dicom_dir']},site-pat-{i},site-acc-{i},{int(s['mvi'])},{labs},{split}")
    lines.append(f"{root / exams['no_roi']['dicom_dir']},site-pat-9,site-acc-9,0,{labs},")
    csv = _csv(tmp_path / "site" / "cohort.csv", lines)
    # the examples are what the recipe's own prepare made of each exam
    outcomes = list(prepare_rows(open_cohort(csv), recipe))
    assert [o.usable for o in outcomes] == [True, True, True, True, False]
    assert outcomes[0].example.prepared.clinical is not None and outcomes[0].example.labels == {"mvi": 1}
    assert "site-pat-0" not in repr(outcomes[0].example)

    out = tmp_path / "models" / "ct_ap_resnet18" / "9.9.8"
    rc = main(["train", "ct_ap_resnet18", "--cohort", str(csv), "--out", str(out), "--seed", "2", "--epochs", "1",
               "--clinical-epochs", "1", "--max-steps", "1", "--version", "9.9.8"])
    assert rc == 0
    model = ModelRegistry([tmp_path / "models"]).get("ct_ap_resnet18")
    assert model.version == "9.9.8" and set(model.variants) == {"clinical", "image_only"}
    t = model.raw["training"]
    assert (t["patients_train"], t["patients_validation"], t["exams_train_with_all_clinical_factors"]) == (2, 2, 2)
    c = model.raw["cohort"]
    assert (c["kind"], c["rows"], c["usable_rows"], c["patients"], c["prevalence"]) == ("csv", 5, 4, 4, 0.5)
    assert c["splits"] == {"train": 2, "validation": 2} and c["left_out"] == {"no ROI": 1}
    assert sum(c["manufacturers"].values()) == 4
    assert model.raw["synthetic"] is False and "NOT FOR CLINICAL USE" in model.intended_use
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "## Cohort" in card and "5 rows, 4 usable" in card and "prevalence 0.50" in card
    manifest_text = (out / "manifest.toml").read_text(encoding="utf-8")
    assert tomllib.loads(manifest_text)["variants"]["clinical"]["sha256"] == model.variants["clinical"].sha256
    logs = "".join(capsys.readouterr())
    assert "exams prepared" in logs and "epochs" in logs  # the progress bars
    assert "row 5, column path: no ROI" in logs
    secret = _identifiers(exams) | {f"site-pat-{i}" for i in (0, 1, 2, 3, 9)} | {f"site-acc-{i}" for i in range(4)}
    assert not [s for s in secret if s in manifest_text or s in card or s in logs]


def test_data_is_a_deprecated_alias_of_cohort():
    from mvi_node.commands.main import build_parser

    args = build_parser().parse_args(["train", "ct_ap_resnet18", "--data", "X", "--out", "M"])
    assert args.cohort == "X" and args.deprecated_data


def test_cohort_rows_and_examples_never_print_identifiers():
    row = CohortRow(1, Path("/x"), {"mvi": 1}, patient_id="DOE^JOHN", accession_number="ACC9",
                    clinical={"afp_ng_ml": "3"})
    assert "DOE" not in repr(row) and "ACC9" not in repr(row)
