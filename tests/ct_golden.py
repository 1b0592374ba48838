"""Fixed synthetic CT exams -> what the CT recipe reports, in a comparable form.

``tests/data/ct_ap_resnet18_reference.json`` was written by this module running the
code before the recipe interface (commit 0f752ac) over the same exams, with the shipped
model; ``test_recipe_interface`` runs it over today's code and compares. The module uses
only APIs both versions have (select_path, Engine.run_exam, build_results).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: (name, make_exam keyword arguments, use the exam's clinical factors)
EXAMS = [
    ("seg_clinical_pos", dict(seed=41, index=0, mvi=True, annotations="seg"), True),
    ("seg_clinical_neg", dict(seed=41, index=1, mvi=False, annotations="seg"), True),
    ("circle_image_only", dict(seed=42, index=2, mvi=True, annotations="circle"), False),
    ("sr_clinical", dict(seed=44, index=4, mvi=True, annotations="sr"), True),
    ("no_annotation", dict(seed=43, index=3, mvi=False, annotations="none"), False),
]

_VOLATILE = {"ContentDate", "ContentTime", "InstanceCreationDate", "InstanceCreationTime", "SeriesDate",
             "SeriesTime", "ObservationDateTime"}


def make_exams(root: Path) -> dict[str, Path]:
    from mvi_node.synth import make_exam

    out = {}
    for name, kwargs, _ in EXAMS:
        folder = root / name
        if not folder.exists():
            make_exam(folder, "ct", matrix=128, hard_cases="none", **kwargs)
        out[name] = folder
    return out


def _content(items, depth: int = 0) -> list[list[Any]]:
    rows = []
    for item in items:
        name = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
        row: list[Any] = [depth, str(item.get("RelationshipType", "")), str(item.ValueType),
                          f"{name.CodeValue}^{name.CodingSchemeDesignator}^{name.CodeMeaning}" if name else ""]
        vt = item.ValueType
        if vt == "TEXT":
            row.append(str(item.TextValue))
        elif vt == "NUM":
            mv = item.MeasuredValueSequence[0]
            unit = mv.MeasurementUnitsCodeSequence[0]
            row += [float(mv.NumericValue), str(unit.CodeValue)]
        elif vt == "CODE":
            c = item.ConceptCodeSequence[0]
            row.append(f"{c.CodeValue}^{c.CodingSchemeDesignator}^{c.CodeMeaning}")
        elif vt == "UIDREF":
            row.append(str(item.UID))
        elif vt == "IMAGE":
            row.append(str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
        elif vt in ("SCOORD", "SCOORD3D"):
            row += [str(item.GraphicType), [round(float(v), 3) for v in item.GraphicData]]
        rows.append(row)
        if "ContentSequence" in item:
            rows += _content(item.ContentSequence, depth + 1)
    return rows


def sr_summary(sr) -> dict[str, Any]:
    """The SR's identity, headers a viewer shows, and its whole content tree."""
    return {
        "sop_instance_uid": str(sr.SOPInstanceUID), "series_instance_uid": str(sr.SeriesInstanceUID),
        "study_instance_uid": str(sr.StudyInstanceUID), "series_description": str(sr.SeriesDescription),
        "content_description": str(sr.get("ContentDescription", "")),
        "concept": str(sr.ConceptNameCodeSequence[0].CodeMeaning),
        "evidence": sorted(str(r.ReferencedSOPInstanceUID) for s in sr.CurrentRequestedProcedureEvidenceSequence
                           for se in s.ReferencedSeriesSequence for r in se.ReferencedSOPSequence),
        "content": _content(sr.ContentSequence),
    }


def outputs(root: Path, model_root: Path, version: str | None = None) -> dict[str, Any]:
    """Per exam: each recipe result's probabilities and the SR/SC the report builds."""
    from mvi_node.clinical import NullClinicalSource, open_source
    from mvi_node.infer import Engine, ModelRegistry
    from mvi_node.report.outputs import build_results
    from mvi_node.select.engine import select_path

    # ROI from annotations only, as in the code the reference was made with: the automatic
    # segmentations (liver_tumor_seg, liver_tumor_seg_mr) are pinned away, so none is served
    pins = {"liver_tumor_seg": "none", "liver_tumor_seg_mr": "none"}
    registry = ModelRegistry([model_root], pins={**pins, **({"ct_ap_resnet18": version} if version else {})})
    out: dict[str, Any] = {}
    for name, _kwargs, clinical in EXAMS:
        folder = root / name
        source = open_source(folder / "clinical") if clinical else NullClinicalSource()
        engine = Engine(registry, source)
        entries = []
        for exam in select_path(folder / "dicom"):
            for res in engine.run_exam(exam):
                if getattr(res, "reported", True) is False:
                    continue
                datasets = build_results(res, exam, 3)
                entries.append({
                    "recipe": res.recipe, "outcome": res.outcome, "probability": res.probability,
                    "threshold": res.threshold, "variant": (res.model or {}).get("variant"),
                    "slices": [[s["sop_instance_uid"], s["probability"]] for s in res.slice_info],
                    "sr": sr_summary(datasets[0]) if datasets else None,
                    "sc": [[str(d.SOPInstanceUID), str(d.ImageComments),
                            str(d.SourceImageSequence[0].ReferencedSOPInstanceUID)] for d in datasets[1:]],
                })
        out[name] = entries
    return out
