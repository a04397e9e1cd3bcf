"""The shipped Prometheus alert rules: valid, unit-tested with promtool, about real metrics."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from .helpers import (
    RULES,
    RULES_TEST,
    SCRAPE_LABELS,
    family_labels,
    grouping_labels,
    metric_names,
    require_tool,
    selectors,
)

RULES_TEXT = RULES.read_text()
ALERTS = re.findall(r"^\s*- alert: (\w+)$", RULES_TEXT, re.MULTILINE)
#: What the issue asks an operator to be woken for, and the alerts that cover it.
REQUIRED = {
    "high error ratio": {"CommBusHighErrorRatio", "CommBusDispatchErrorRatio"},
    "timeouts": {"CommBusTimeouts"},
    "unhealthy service": {"CommBusServiceUnhealthy"},
    "queue saturation": {"CommBusQueueSaturation", "CommBusDispatchOverloaded"},
    "dead-letter growth": {"CommBusDeadLetters", "CommBusDeadLetterGrowth"},
    "telemetry errors": {"CommBusTelemetryErrors"},
}


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    promtool = require_tool("promtool")
    return subprocess.run([promtool, *map(str, args)], capture_output=True, text=True, check=False)


def test_rules_file_is_valid() -> None:
    result = _promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_every_required_alert_is_shipped() -> None:
    assert len(ALERTS) == len(set(ALERTS))
    for topic, names in REQUIRED.items():
        assert names <= set(ALERTS), topic


def test_promtool_unit_tests_pass() -> None:
    """tests/grafana/commbus.rules.test.yml: each alert firing on synthetic series, and not
    firing on its neighbours (another job, low traffic, a flap shorter than ``for``)."""
    result = _promtool("test", "rules", RULES_TEST)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    tested = set(re.findall(r"alertname: (\w+)", RULES_TEST.read_text()))
    assert tested == set(ALERTS)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("[5m]))\n          ) > 0.05", "[5m]))\n          ) > 0.5"),  # error-ratio threshold
        ("commbus_service_healthy == 0\n        for: 2m", "commbus_service_healthy == 0"),
        ("sum by (job, instance, pattern, target)", "sum by (pattern, target)"),
        (
            "delta(commbus_dead_letter_messages[15m]) > 0",
            "delta(commbus_dead_letter_messages[15m]) >= 0",
        ),
    ],
    ids=["error-ratio-threshold", "unhealthy-without-for", "timeouts-merge-jobs", "flat-depth"],
)
def test_unit_tests_catch_a_broken_rule(tmp_path: Path, old: str, new: str) -> None:
    """The promtool tests can fail: each mutation of a rule makes them fail."""
    assert old in RULES_TEXT
    rules = tmp_path / "commbus.rules.yml"
    rules.write_text(RULES_TEXT.replace(old, new, 1))
    test = tmp_path / "commbus.rules.test.yml"
    test.write_text(
        RULES_TEST.read_text().replace("../../grafana/alerts/commbus.rules.yml", str(rules))
    )
    assert _promtool("check", "rules", rules).returncode == 0  # still valid PromQL
    result = _promtool("test", "rules", test)
    assert result.returncode != 0, result.stdout


def test_every_alert_keeps_job_and_instance() -> None:
    """An aggregation that dropped them would merge two deployments into one alert."""
    expressions = re.findall(r"(?:^\s*expr: (.+)$)|(?:^\s*expr: \|\n((?:\s{10}.+\n)+))",
                             RULES_TEXT, re.MULTILINE)  # fmt: skip
    assert len(expressions) == len(ALERTS)
    for one_line, block in expressions:
        expr = one_line or block
        for clause in re.findall(r"\bby \(([^)]*)\)", expr):
            assert {"job", "instance"} <= {c.strip() for c in clause.split(",")}, expr
        for clause in re.findall(r"\bon \(([^)]*)\)", expr):
            assert {"job", "instance"} <= {c.strip() for c in clause.split(",")}, expr


@pytest.mark.parametrize("path", [RULES, RULES_TEST], ids=["rules", "unit-tests"])
def test_rules_and_their_tests_use_declared_metrics_and_labels(path: Path) -> None:
    """The rules watch, and the unit tests feed, series named and labelled as ``src/``
    declares them."""
    families = family_labels()
    text = path.read_text()
    names = metric_names(text)
    assert names and names <= set(families), sorted(names - set(families))
    for metric, labels, body in selectors(text):
        assert labels <= families[metric] | SCRAPE_LABELS, f"{metric}{body}"
    available = SCRAPE_LABELS.union(*(families[n] for n in names))
    assert grouping_labels(text) <= available
