"""The Grafana dashboard offline: structure, layout, PromQL syntax, metric names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from jeeves_control_tower.observability.metrics import METRIC_NAMES, get_metrics

from .helpers import (
    ROOT,
    data_panels,
    expressions,
    load_dashboard,
    metric_names,
    require_tool,
    variable_queries,
)

DASHBOARD = load_dashboard()
PANELS = data_panels(DASHBOARD)


def test_checked_in_json_matches_generator() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "grafana" / "build_dashboard.py"), "--check"], check=False
    )
    assert result.returncode == 0, "run python grafana/build_dashboard.py to regenerate"


def test_every_panel_has_datasource_targets_and_grid_pos() -> None:
    assert PANELS
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in PANELS:
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"], panel["title"]
            assert target["datasource"] == panel["datasource"]
        pos = panel["gridPos"]
        assert {"x", "y", "w", "h"} <= set(pos), panel["title"]
        assert pos["x"] >= 0 and pos["y"] >= 0 and pos["w"] > 0 and pos["h"] > 0
        assert pos["x"] + pos["w"] <= 24, panel["title"]


def test_no_overlapping_panels() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in DASHBOARD["panels"]:
        pos = panel["gridPos"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_required_panels_present() -> None:
    titles = " | ".join(p["title"].lower() for p in PANELS)
    for needle in (
        "rate by pattern", "rate by type", "latency p50 / p95 / p99", "timeouts", "error",
        "dispatch outcomes", "retries", "load vs capacity", "queue depth", "health",
    ):  # fmt: skip
        assert needle in titles, needle


def test_latency_panels_have_exemplars() -> None:
    latency = [p for p in PANELS if "latency" in p["title"].lower()]
    assert len(latency) == 2
    for panel in latency:
        exprs = [t["expr"] for t in panel["targets"]]
        assert all("histogram_quantile" in e for e in exprs)
        assert {"0.5", "0.95", "0.99"} == {e.split("(")[1].split(",")[0] for e in exprs}
        assert all(t["exemplar"] is True for t in panel["targets"])


def test_template_variables_use_label_values() -> None:
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert set(variables) == {"service", "message_type"}
    for name, variable in variables.items():
        assert variable["query"]["query"] == variable["definition"]
        assert variable["query"]["query"].startswith("label_values(")
        assert variable["query"]["query"].rstrip(")").endswith(name)
        assert variable["includeAll"] and variable["multi"] and variable["allValue"] == ".*"
    used = " ".join(t["expr"] for p in PANELS for t in p["targets"])
    assert "$service" in used and "$message_type" in used


def _known_series() -> set[str]:
    """Every series name the project's metric container can expose."""
    registry = CollectorRegistry()
    get_metrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def test_every_metric_a_panel_uses_is_defined() -> None:
    known = _known_series()
    used: set[str] = set()
    for title, expr in expressions(DASHBOARD):
        names = metric_names(expr)
        assert names, f"{title}: no commbus metric in {expr!r}"
        assert names <= known, f"{title}: unknown {sorted(names - known)}"
        used |= names
    for query in variable_queries(DASHBOARD):
        assert metric_names(query) <= known
    # every family in the contract (but the telemetry self-check) is on some panel
    families = {n.removesuffix("_bucket") for n in used}
    missing = {n for n in METRIC_NAMES if n not in families} - {"commbus_telemetry_errors_total"}
    assert not missing, f"metrics without a panel: {sorted(missing)}"


def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    rules = [
        {"record": f"jeeves:panel_{i}", "expr": expr}
        for i, (_, expr) in enumerate(expressions(DASHBOARD))
    ]
    path = tmp_path / "rules.yml"  # JSON is YAML: no YAML library needed
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


@pytest.mark.parametrize("bad", ["sum(rate(commbus_messages_total[1m])", "commbus_x{a=}"])
def test_promtool_rejects_broken_promql(tmp_path: Path, bad: str) -> None:
    """The parse check above can fail: promtool does reject broken expressions."""
    promtool = require_tool("promtool")
    path = tmp_path / "rules.yml"
    path.write_text(
        json.dumps({"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": bad}]}]})
    )
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, check=False
    )
    assert result.returncode != 0


def test_provisioning_files() -> None:
    grafana = ROOT / "grafana" / "provisioning"
    sources = (grafana / "datasources" / "prometheus.yml").read_text()
    for needle in (
        "uid: prometheus",
        "type: prometheus",
        "url: http://prometheus:9090",
        "exemplarTraceIdDestinations",
        "datasourceUid: jaeger",
        "uid: jaeger",
    ):
        assert needle in sources, needle
    providers = (grafana / "dashboards" / "dashboards.yml").read_text()
    assert "path: /var/lib/grafana/dashboards" in providers


def test_prometheus_config_is_valid() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(ROOT / "deploy" / "prometheus.yml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_is_valid() -> None:
    compose = require_tool("docker-compose")
    result = subprocess.run(
        [compose, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    services = subprocess.run(
        [compose, "-f", str(ROOT / "docker-compose.yml"), "config", "--services"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout.split()  # fmt: skip
    assert set(services) == {
        "demo",
        "dashboard",
        "prometheus",
        "grafana",
        "jaeger",
        "redis",
        "nats",
    }
