"""Series-selection accuracy against a synthetic population's manifest.json.

    .venv/bin/mvi-node synth mr --patients 40 --seed 77 --matrix 32 --out /tmp/x
    .venv/bin/python -m bench.select_accuracy /tmp/x [--json] [--errors]

Scores every unit the manifest names (a series, or ``uid#tpi`` of a multiphase series):
role accuracy overall and per expected role, and the exams whose seed-001 recipe inputs
(mr_t1_pre, mr_portal_venous, mr_transitional) or seed-000 input (ct_arterial) are
exactly the manifest's. Header reading is included in the time; pixels are not read.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from mvi_node.select.engine import select_path
from mvi_node.select.recipes import RecipeNeeds
from mvi_node.select.report import build_report

NEEDS = (
    RecipeNeeds("ct_ap_resnet18", ("ct_arterial",), modalities=frozenset({"CT"})),
    RecipeNeeds("mr_3seq_grade", ("mr_t1_pre", "mr_portal_venous", "mr_transitional"), modalities=frozenset({"MR"})),
)


def expected_roles(study: dict) -> dict[str, str]:
    out = {}
    for uid, role in study["series"].items():
        if uid in study.get("phases", {}):
            out.update({f"{uid}#{tpi}": r for tpi, r in study["phases"][uid].items()})
        else:
            out[uid] = role
    return out


def score(folder: Path) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    report = build_report(select_path(folder), needs=NEEDS)
    seconds = time.perf_counter() - t0
    got, recipes = {}, {}
    for st in report["studies"]:
        for s in st["series"]:
            got[s["series_instance_uid"]] = (s["role"], s["reason"])
        recipes[tuple(sorted(st["study_instance_uids"]))] = {
            r["name"]: r["inputs"] for r in st["recipes"] if r["name"] in {n.name for n in NEEDS}}
    total, right = Counter(), Counter()
    errors, exams_ok = [], 0
    for study in manifest["studies"]:
        for uid, role in expected_roles(study).items():
            role_got, reason = got.get(uid, (None, "not reported"))
            total[role] += 1
            if role_got == role:
                right[role] += 1
            else:
                desc = study.get("series_detail", {}).get(uid.split("#")[0], {}).get("description", "")
                errors.append({"exam": study["accession_number"], "unit": uid, "description": desc,
                               "expected": role, "got": role_got, "reason": reason})
        key = tuple(sorted(study["study_instance_uids"]))
        exams_ok += recipes.get(key) == study.get("recipes", {})
    n, k = sum(total.values()), sum(right.values())
    return {
        "folder": str(folder), "exams": len(manifest["studies"]), "units": n, "correct": k,
        "role_accuracy": round(k / n, 4) if n else None,
        "per_role": {r: f"{right[r]}/{total[r]}" for r in sorted(total)},
        "recipe_inputs_exact": f"{exams_ok}/{len(manifest['studies'])}",
        "seconds": round(seconds, 2), "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--json", action="store_true")
    p.add_argument("--errors", action="store_true", help="list every wrong unit with its reason")
    args = p.parse_args(argv)
    result = score(args.folder)
    if args.json:
        print(json.dumps(result if args.errors else {k: v for k, v in result.items() if k != "errors"}, indent=1))
        return 0
    print(f"{result['exams']} exams, {result['units']} units: role accuracy {result['role_accuracy']:.2%} "
          f"({result['correct']}/{result['units']}); recipe inputs exact {result['recipe_inputs_exact']}; "
          f"{result['seconds']} s")
    for role, frac in result["per_role"].items():
        print(f"  {role:<18} {frac}")
    if args.errors:
        for e in result["errors"]:
            print(f"  WRONG {e['exam']} {e['description']!r}: expected {e['expected']}, got {e['got']}: {e['reason'][:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
