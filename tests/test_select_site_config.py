"""A site rules file named in the node's configuration changes what the study job selects."""

from __future__ import annotations

import json

import httpx

from conftest import storescu
from mvi_node.synth import generate_ct

SITE_RULES = """
[[rule]]
name = "site-research-hold"
role = "other"
priority = 100000
reason = "site: CT exams are on research hold"
when.all = [ { tag = "Modality", in = ["CT"] } ]
"""


def _roles(node) -> tuple[set[str], list]:
    jobs = httpx.get(f"http://127.0.0.1:{node.admin_port}/jobs").json()
    detail = httpx.get(f"http://127.0.0.1:{node.admin_port}/jobs/{jobs[0]['id']}").json()
    exams = detail["result"]["selection"]["studies"]
    return {s["role"] for e in exams for s in e["series"]}, [r for e in exams for r in e["recipes"]]


def test_site_rules_from_config_change_the_decision(node, tmp_path):
    exam = tmp_path / "exam"
    generate_ct(exam, patients=1, seed=5, matrix=48, hard_cases="none")
    rules = tmp_path / "site-rules.toml"
    rules.write_text(SITE_RULES)
    cfg = tmp_path / "node.toml"
    cfg.write_text(f'[select]\nrules = "{rules}"\n')

    plain = node()
    storescu(plain.port, exam, extra=["-R"])
    plain.wait_jobs(1)
    roles, recipes = _roles(plain)
    assert "ct_arterial" in roles and recipes

    held = node(config=cfg)
    storescu(held.port, exam, extra=["-R"])
    held.wait_jobs(1)
    roles, recipes = _roles(held)
    assert "ct_arterial" not in roles and not recipes
    detail = json.dumps(httpx.get(f"http://127.0.0.1:{held.admin_port}/jobs/1").json())
    assert "site: CT exams are on research hold" in detail
