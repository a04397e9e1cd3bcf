"""The Grafana dashboard offline: structure, layout, PromQL syntax, metric names."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jeeves_control_tower.observability.metrics import METRIC_NAMES

from .helpers import (
    ROOT,
    SCRAPE_LABELS,
    data_panels,
    expressions,
    family_labels,
    grouping_labels,
    legend_labels,
    load_dashboard,
    metric_names,
    missing_deployment_matchers,
    query_variables,
    raw_expressions,
    require_tool,
    selectors,
    variable_queries,
)

VARIABLE_DS = {"type": "prometheus", "uid": "${datasource}"}
#: Where docker-compose mounts grafana/alerts in the Prometheus container.
RULES_IN_CONTAINER = "/etc/prometheus/rules"

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
        assert panel["datasource"] == VARIABLE_DS, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"], panel["title"]
            assert target["datasource"] == VARIABLE_DS, panel["title"]
        pos = panel["gridPos"]
        assert {"x", "y", "w", "h"} <= set(pos), panel["title"]
        assert pos["x"] >= 0 and pos["y"] >= 0 and pos["w"] > 0 and pos["h"] > 0
        assert pos["x"] + pos["w"] <= 24, panel["title"]


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """``(path, key, value)`` for every key of every object in the JSON."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def test_no_hard_coded_datasource_anywhere() -> None:
    """Imported into a Grafana whose Prometheus has any uid, no panel points elsewhere."""
    refs = [(path, value) for path, key, value in _walk(DASHBOARD) if key == "datasource"]
    assert len(refs) > len(PANELS)  # panels, targets and query variables
    for path, value in refs:
        assert value == VARIABLE_DS, path
    assert DASHBOARD["uid"] == "jeeves-commbus"  # the dashboard's own
    for path, key, value in _walk(DASHBOARD):
        if path and key.lower().endswith("uid"):  # uid, datasourceUid...
            assert value == "${datasource}", f"{path}.{key} = {value!r}"


def test_datasource_variable_and_import_input() -> None:
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert not ds["multi"] and not ds["includeAll"]
    assert DASHBOARD["templating"]["list"][0] is ds  # resolved before the variables using it
    (source,) = DASHBOARD["__inputs"]
    assert source["name"] == "DS_PROMETHEUS"
    assert source["type"] == "datasource" and source["pluginId"] == "prometheus"
    assert {"type": "datasource", "id": "prometheus"}.items() <= DASHBOARD["__requires"][1].items()


def test_import_binds_the_chosen_datasource() -> None:
    """What Grafana's import does with ``__inputs`` (replace ``${DS_PROMETHEUS}`` in every
    string): the variable starts on the chosen data source, and every panel follows it."""
    text = (ROOT / "grafana" / "dashboards" / "jeeves-commbus.json").read_text()
    assert text.count("${DS_PROMETHEUS}") == 2  # the variable's initial text and value
    imported = json.loads(text.replace("${DS_PROMETHEUS}", "my-prometheus-uid"))
    ds = imported["templating"]["list"][0]
    assert ds["current"]["value"] == "my-prometheus-uid"
    panels = data_panels(imported)
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)


def test_every_selector_filters_by_job_and_instance() -> None:
    """Two deployments scraped by one Prometheus are never summed together."""
    for title, expr in raw_expressions(DASHBOARD):
        assert list(selectors(expr)), title
        assert not missing_deployment_matchers(expr), f"{title}: {expr}"
    variables = {v["name"]: v["query"]["query"] for v in query_variables(DASHBOARD)}
    assert variables["job"] == "label_values(commbus_messages_total, job)"
    assert variables["instance"] == 'label_values(commbus_messages_total{job=~"$job"}, instance)'
    for name in ("service", "message_type"):
        assert not missing_deployment_matchers(variables[name]), name


@pytest.mark.parametrize(
    "expr",
    [
        'sum(rate(commbus_messages_total{instance=~"$instance"}[1m]))',
        'commbus_service_load{job=~"$job"} / commbus_service_capacity',
        'sum(rate(commbus_messages_total{job=~"$job", instance=~"$instance"}[1m]))'
        ' / sum(rate(commbus_messages_total{job="x", instance=~"$instance"}[1m]))',
    ],
)
def test_a_selector_without_the_matchers_is_caught(expr: str) -> None:
    assert missing_deployment_matchers(expr)


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
    variables = {v["name"]: v for v in query_variables(DASHBOARD)}
    assert set(variables) == {"job", "instance", "service", "message_type"}
    for name, variable in variables.items():
        assert variable["query"]["query"] == variable["definition"]
        assert variable["query"]["query"].startswith("label_values(")
        assert variable["query"]["query"].rstrip(")").endswith(f", {name}")
        assert variable["includeAll"] and variable["multi"] and variable["allValue"] == ".*"
    used = " ".join(expr for _, expr in raw_expressions(DASHBOARD))
    for name in variables:
        assert f"${name}" in used, name


def test_every_metric_and_label_a_panel_uses_is_declared() -> None:
    """Names and labels as ``src/`` declares them."""
    families = family_labels()
    used: set[str] = set()
    for panel in PANELS:
        for target in panel["targets"]:
            title, expr = f"{panel['title']}/{target['refId']}", target["expr"]
            names = metric_names(expr)
            assert names, f"{title}: no commbus metric in {expr!r}"
            assert names <= set(families), f"{title}: unknown {sorted(names - set(families))}"
            available = SCRAPE_LABELS.union(*(families[n] for n in names))
            for metric, labels, _ in selectors(expr):
                assert labels <= families[metric] | SCRAPE_LABELS, f"{title}: {metric} {labels}"
            assert grouping_labels(expr) <= available, f"{title}: {grouping_labels(expr)}"
            shown = grouping_labels(expr) or available
            assert legend_labels(target["legendFormat"]) <= shown, f"{title}: legend"
            used |= names
    for query in variable_queries(DASHBOARD):
        (name,) = metric_names(query)
        label = query.rstrip(")").rsplit(", ", 1)[1]
        assert label in families[name] | SCRAPE_LABELS, query
    # every family has a panel (a histogram through its buckets)
    shown = {n.removesuffix("_bucket") for n in used}
    families_exposed = {n for n in families if not n.endswith(("_sum", "_count"))}
    missing = {n.removesuffix("_bucket") for n in families_exposed} - shown
    assert not missing, f"metrics without a panel: {sorted(missing)}"
    assert set(METRIC_NAMES) <= shown  # the bus's contract, telemetry errors included


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


def test_deploy_config_loads_the_shipped_rules(tmp_path: Path) -> None:
    """deploy/prometheus.yml with its rule_files pointed where docker-compose mounts
    grafana/alerts: promtool loads the config and every rule file it names."""
    promtool = require_tool("promtool")
    text = (ROOT / "deploy" / "prometheus.yml").read_text()
    assert f"  - {RULES_IN_CONTAINER}/*.rules.yml" in text
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace(RULES_IN_CONTAINER, str(ROOT / "grafana" / "alerts")))
    result = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "commbus.rules.yml" in result.stdout and "SUCCESS: 10 rules found" in result.stdout


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
    config = subprocess.run(
        [compose, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    # the Prometheus container sees grafana/alerts where deploy/prometheus.yml looks
    assert f"{ROOT / 'grafana' / 'alerts'}:{RULES_IN_CONTAINER}:ro" in config
    assert set(services) == {
        "demo",
        "dashboard",
        "prometheus",
        "grafana",
        "jaeger",
        "redis",
        "nats",
    }


def test_transport_panels_show_every_transport() -> None:
    """A demo over Redis, NATS, RabbitMQ or gRPC (``jeeves-ipc demo --transport``) lands in
    the same panels: no selector picks a transport, and every panel over a family with the
    ``transport`` label keeps it apart (``by (transport, ...)``)."""
    labelled = {name for name, labels in family_labels().items() if "transport" in labels}
    assert "commbus_wire_messages_total" in labelled
    seen = 0
    for title, expr in raw_expressions(DASHBOARD):
        for metric, matchers, body in selectors(expr):
            assert "transport" not in matchers, f"{title}: {metric}{body}"
        if metric_names(expr) & labelled:
            seen += 1
            assert "transport" in grouping_labels(expr), f"{title}: {expr}"
    assert seen >= 5
