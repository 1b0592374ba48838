"""A real Prometheus (Debian package) scrapes the node; the shipped rules and dashboard are valid."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx

from conftest import free_port, storescu, wait_port
from mvi_node.synth.plain_series import plain_ct_series

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


def _query(base: str, expr: str) -> list[dict]:
    r = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=5)
    r.raise_for_status()
    return r.json()["data"]["result"]


def _wait_value(base: str, expr: str, predicate, timeout: float = 40.0) -> float:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        result = _query(base, expr)
        if result:
            last = float(result[0]["value"][1])
            if predicate(last):
                return last
        time.sleep(0.5)
    raise AssertionError(f"{expr}: last value {last}")


def test_prometheus_scrapes_the_node(node, tmp_path):
    n = node()
    prom_port = free_port()
    rules = tmp_path / "mvi-node-alerts.yml"
    rules.write_text((DEPLOY / "prometheus" / "mvi-node-alerts.yml").read_text())
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [mvi-node-alerts.yml]\n"
        "scrape_configs:\n"
        f"  - job_name: mvi-node\n    static_configs: [{{targets: ['127.0.0.1:{n.admin_port}']}}]\n"
    )
    prom = subprocess.Popen(
        [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(prom_port)
        base = f"http://127.0.0.1:{prom_port}"
        assert _wait_value(base, 'up{job="mvi-node"}', lambda v: v == 1) == 1
        series = plain_ct_series(tmp_path / "s", slices=4, matrix=64, seed=31)
        assert storescu(n.port, series[0].parent).returncode == 0
        assert _wait_value(base, "mvi_instances_received_total", lambda v: v > 0) == 4
        n.wait_jobs(1)
        assert _wait_value(base, 'mvi_jobs{state="done"}', lambda v: v == 1) == 1
        rules_loaded = httpx.get(f"{base}/api/v1/rules", timeout=5).json()["data"]["groups"]
        assert {r["name"] for g in rules_loaded for r in g["rules"]} >= {"MviDeadLetters", "MviJobQueuedTooLong", "MviNoStudyReceived", "MviProbabilityDrift"}
    finally:
        prom.terminate()
        prom.wait(20)


def test_shipped_prometheus_config_and_rules_pass_promtool():
    out = subprocess.run([PROMTOOL, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 9 rules found" in out.stdout + out.stderr


def test_dashboard_queries_only_metrics_the_node_exports():
    dash = json.loads((DEPLOY / "grafana" / "mvi-node-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    package = Path(__file__).resolve().parents[1] / "mvi_node"
    # in-process metrics, and the collector that reads the stores at scrape time
    sources = [*(package / "metrics").glob("*.py"), package / "admin" / "collector.py"]
    source = "\n".join(p.read_text() for p in sources)
    import re

    for expr in exprs:
        for name in re.findall(r"\bmvi_[a-z_]+", expr):
            base = re.sub(r"_(total|bucket|sum|count)$", "", name)
            assert f'"{base}"' in source, f"dashboard uses {name}, which the node does not export"
