"""Configuration: defaults, TOML, environment overrides, errors that name the key."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mvi_node.config import ConfigError, load_settings, masked_dump


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "mvi_node", *args], capture_output=True, text=True, env=env)


def test_defaults_work_on_one_machine():
    s = load_settings()
    assert s.listener.ae_title == "MVI_NODE" and s.listener.port == 11112
    assert str(s.data_dir) == "var" and s.staging.backend == "filesystem" and s.jobs.backend == "sqlite"
    assert s.admin.host == "127.0.0.1" and s.completion.quiet_seconds == 10
    assert s.staging.durability == "fsync"


def test_toml_env_and_cli_precedence(tmp_path, monkeypatch):
    cfg = tmp_path / "n.toml"
    cfg.write_text('[listener]\nport = 2000\nae_title = "FROM_TOML"\n[completion]\nquiet_seconds = 5\n')
    monkeypatch.setenv("MVI_LISTENER__PORT", "3000")
    s = load_settings(cfg, {"completion.quiet_seconds": 7})
    assert s.listener.port == 3000  # environment beats the file
    assert s.listener.ae_title == "FROM_TOML"  # the file beats defaults, keys not overridden survive
    assert s.completion.quiet_seconds == 7  # the command line beats everything


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[listener]\nport = 70000\n", "listener.port: Input should be less than or equal to 65535"),
        ("[listener]\nprot = 1\n", "listener.prot: Extra inputs are not permitted"),
        ('[listener]\nae_title = "A\\\\B"\n', "listener.ae_title: an AE title is 1-16 printable characters"),
        ('[listener]\nallowed_callers = ["PACS@"]\n', "listener.allowed_callers: 'PACS@': host after '@' is empty"),
        ('[listener.tls]\nenabled = true\n', "listener.tls: certificate is required when TLS is enabled"),
        ('[admin]\nhost = "0.0.0.0"\n', "admin: token is required when the admin endpoint is bound beyond loopback"),
        ("[staging]\ndurability = 'maybe'\n", "staging.durability: Input should be 'fsync' or 'batched'"),
        ('[admin]\ntoken = ""\n', "admin.token: is empty; set at least 16 characters or remove the key"),
        ('[admin]\ntoken = "x"\n', "admin.token: is shorter than 16 characters"),
        ('[admin]\ntoken = "                    "\n', "admin.token: is empty"),
        ('[admin]\ntoken = "0123456789 abcdef"\n', "admin.token: must not contain whitespace"),
        ('[admin.tls]\nenabled = true\n', "admin.tls: certificate is required when TLS is enabled"),
        ("[listener]\nunused_sop_classes = 'drop'\n", "listener.unused_sop_classes: Input should be 'store' or 'discard'"),
        ("[listener]\nmax_inflated_mb = 0\n", "listener.max_inflated_mb: Input should be greater than or equal to 1"),
        ('[listener]\nsop_classes = ["1.2.x"]\n', "listener.sop_classes"),
        ("[models]\nother_lesions = -1\n", "models.other_lesions: Input should be greater than or equal to 0"),
        ("[completion]\nexam_window_minutes = -5\n", "completion.exam_window_minutes: Input should be greater"),
        ("listener = [", "not valid TOML"),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, expected):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert expected in str(err.value)
    cli = run_cli("config", "check", str(cfg))
    assert cli.returncode == 2 and expected in cli.stderr


def test_config_check_ok_and_show_masks_secrets(tmp_path):
    cfg = tmp_path / "ok.toml"
    cfg.write_text('[admin]\nhost = "0.0.0.0"\ntoken = "s3cr3t-token-0123456789"\n')
    assert run_cli("config", "check", str(cfg)).returncode == 0
    shown = run_cli("config", "show", "--config", str(cfg))
    assert shown.returncode == 0
    assert "s3cr3t-token-0123456789" not in shown.stdout and 'token = "**********"' in shown.stdout
    assert masked_dump(load_settings(cfg))["admin"]["token"] == "**********"


def test_status_json_keys(tmp_path):
    out = run_cli("status", "--json", "--data-dir", str(tmp_path / "empty"))
    data = json.loads(out.stdout)
    assert set(data) == {"studies", "instances", "duplicates", "jobs"}
    assert set(data["jobs"]) == {"queued", "running", "done", "failed", "dead"}


def test_shipped_example_config_is_valid_and_matches_defaults():
    from pathlib import Path

    example = load_settings(Path(__file__).parents[1] / "deploy" / "mvi-node.toml")
    assert masked_dump(example) == masked_dump(load_settings())


def test_the_node_wires_the_report_and_exam_settings_into_its_study_pipeline(tmp_path):
    """[models] other_lesions reaches the report builder, [completion] exam_window_minutes
    the exam assembly (values a site sets, not the defaults)."""
    from mvi_node.app.node import Node

    s = load_settings(None, {"data_dir": str(tmp_path / "var"), "admin.enabled": False, "models.other_lesions": 0,
                             "completion.exam_window_minutes": 90})
    node = Node(s)
    try:
        (pipeline,) = [h for w in node.workers for k, h in w.handlers.items() if k == "study"]
        assert pipeline.report.keywords == {"other_lesions": 0}
        assert pipeline.exam_window_seconds == 90 * 60
    finally:
        node.jobs.close()
