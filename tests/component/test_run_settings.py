"""`nodeos run` refuses settings it cannot work with: one clear line, exit 2, no Lease taken.

Also the settings' precedence (flag, then variable, then default) and the log formats.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nodeos import config, logs


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read"),
        ("context: prod\ncontexts: {}\n", "'contexts' is missing or empty"),
        ("{{{", "not valid YAML"),
    ],
)
def test_an_unusable_talosconfig_is_one_line_and_exit_2(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    talosconfig = tmp_path / "talosconfig"
    if content is not None:
        talosconfig.write_text(content)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nodeos",
            "run",
            "--kubeconfig",
            str(tmp_path / "no-cluster-is-contacted"),
            "--talosconfig",
            str(talosconfig),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "cannot start" in lines[0]
    assert expected in lines[0]
    assert str(talosconfig) in lines[0]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "NODEOS_METRICS_PORT",
            "9090x",
            "NODEOS_METRICS_PORT=9090x (--metrics-port): must be a valid integer",
        ),
        (
            "NODEOS_HEALTH_PORT",
            "70000",
            "NODEOS_HEALTH_PORT=70000 (--health-port): must be less than",
        ),
        ("NODEOS_OS_API_ENDPOINTS", "Nodes", "must be 'ControlPlane' or 'Node'"),
        (
            "NODEOS_LOG_FORMAT",
            "xml",
            "NODEOS_LOG_FORMAT=xml (--log-format): must be 'text' or 'json'",
        ),
        ("NODEOS_POLL", "-1", "NODEOS_POLL=-1 (--poll-interval): must be greater than 0"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(variable: str, value: str, expected: str) -> None:
    env = {**os.environ, variable: value}
    helped = subprocess.run(
        [sys.executable, "-m", "nodeos", "--help"], env=env, capture_output=True, text=True
    )
    assert helped.returncode == 0, "help works whatever the environment holds"
    result = subprocess.run(
        [sys.executable, "-m", "nodeos", "run"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]


def test_a_flag_wins_over_its_variable_and_levels_are_case_insensitive() -> None:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    args = parser.parse_args(["--metrics-port", "9100", "--log-level", "debug"])
    settings = config.from_arguments(args, {"NODEOS_METRICS_PORT": "9090x", "NODEOS_POLL": "2"})
    assert settings.metrics_port == 9100
    assert settings.poll_s == 2.0
    assert settings.log_level == "DEBUG"


def test_json_logs_are_one_object_per_line_with_the_records_fields() -> None:
    record = logging.LogRecord(
        "nodeos.engine", logging.INFO, "x", 1, "Draining -> Upgrading", None, None
    )
    record.plan, record.node = "fleet", "worker-3"  # type: ignore[attr-defined]
    entry = json.loads(logs.JsonFormatter().format(record))
    assert entry["message"] == "Draining -> Upgrading"
    assert (entry["plan"], entry["node"], entry["level"]) == ("fleet", "worker-3", "INFO")
    assert entry["time"].endswith("Z")
    text = logs.TextFormatter().format(record)
    assert text.endswith("Draining -> Upgrading plan=fleet node=worker-3")
