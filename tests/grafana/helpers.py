"""Reading the Grafana dashboard and the alert rules: panels, PromQL, metric names, labels."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc.adapters.metrics import AdapterMetrics
from jeeves_control_tower.observability.aggregate import FAMILIES, AggregateCollector
from jeeves_control_tower.observability.metrics import get_metrics
from tests.helpers import unavailable

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana" / "dashboards" / "jeeves-commbus.json"
RULES = ROOT / "grafana" / "alerts" / "commbus.rules.yml"
RULES_TEST = Path(__file__).resolve().parent / "commbus.rules.test.yml"

#: What the Grafana template variables become when every value is selected.
SUBSTITUTIONS = {
    "$__rate_interval": "15s",
    "$__interval": "5s",
    "$job": ".*",
    "$instance": ".*",
    "$service": ".*",
    "$message_type": ".*",
}
#: The matchers every series selector of the dashboard carries.
DEPLOYMENT_MATCHERS = ('job=~"$job"', 'instance=~"$instance"')

#: Labels Prometheus adds to every scraped series, and the bucket bound of a histogram.
SCRAPE_LABELS = {"job", "instance"}

_METRIC = re.compile(r"\b(commbus_[a-z_]+)\b")
_SELECTOR = re.compile(r"\b(commbus_[a-z_]+)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
_LEGEND = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that shows data (rows excluded), nested row panels included."""
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def raw_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(panel title/refId, PromQL as written, variables and all)`` for every target."""
    return [
        (f"{panel['title']}/{target['refId']}", target["expr"])
        for panel in data_panels(dashboard)
        for target in panel["targets"]
    ]


def expressions(
    dashboard: dict[str, Any], values: dict[str, str] | None = None
) -> list[tuple[str, str]]:
    """:func:`raw_expressions` with the variables substituted (``values`` override
    :data:`SUBSTITUTIONS`)."""
    return [(title, substitute(expr, values)) for title, expr in raw_expressions(dashboard)]


def query_variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in dashboard["templating"]["list"] if v["type"] == "query"]


def variable_queries(dashboard: dict[str, Any]) -> list[str]:
    """The ``label_values(...)`` query of every query variable, variables substituted."""
    return [substitute(v["query"]["query"]) for v in query_variables(dashboard)]


def substitute(expr: str, values: dict[str, str] | None = None) -> str:
    table = SUBSTITUTIONS | (values or {})
    # longest first: "$instance" must not be read as "$in" + "stance"
    for variable in sorted(table, key=len, reverse=True):
        expr = expr.replace(variable, table[variable])
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric names (series names, e.g. ``..._bucket``) used in a PromQL expression."""
    return set(_METRIC.findall(expr))


def selectors(expr: str) -> Iterator[tuple[str, set[str], str]]:
    """``(metric, matcher label names, matcher text)`` for every series selector."""
    for match in _SELECTOR.finditer(expr):
        body = match.group(2) or "{}"
        yield match.group(1), {label for label, _ in _MATCHER.findall(body)}, body


def missing_deployment_matchers(expr: str) -> list[str]:
    """The selectors of ``expr`` that lack ``job=~"$job"`` or ``instance=~"$instance"``."""
    return [
        f"{metric}{body}"
        for metric, _, body in selectors(expr)
        if not all(matcher in body for matcher in DEPLOYMENT_MATCHERS)
    ]


def grouping_labels(expr: str) -> set[str]:
    """Labels named in ``by``/``without``/``on``/``ignoring`` clauses."""
    return {
        label.strip()
        for clause in _GROUPING.findall(expr)
        for label in clause.split(",")
        if label.strip()
    }


def legend_labels(legend: str) -> set[str]:
    return set(_LEGEND.findall(legend))


def family_labels() -> dict[str, set[str]]:
    """Every series name this checkout can expose (``_total``, ``_bucket``... as exposed)
    -> its label names (``le`` included for buckets)."""
    registry = CollectorRegistry()
    get_metrics(registry)
    AdapterMetrics("test", registry)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    out: dict[str, set[str]] = {}
    for collector in getattr(registry, "_collector_to_names", {}):
        if isinstance(collector, AggregateCollector):  # declares its families in a table
            for name, (kind, _, names) in FAMILIES.items():
                for suffix in suffixes.get(kind, ("",)):
                    out[name + suffix] = set(names) | ({"le"} if suffix == "_bucket" else set())
            continue
        labels = set(collector._labelnames)
        for family in collector.describe():
            for suffix in suffixes.get(family.type, ("",)):
                out[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return out


def require_tool(path: str) -> str:
    """``path`` if it is installed; skip when it is not, unless running in CI (then fail)."""
    found = shutil.which(path)
    if found:
        return found
    unavailable(f"{path} is not installed")
