"""Reading the Grafana dashboard: panels, their PromQL, and the metric names it uses."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from tests.helpers import unavailable

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana" / "dashboards" / "jeeves-commbus.json"

#: What the Grafana template variables become when every value is selected.
SUBSTITUTIONS = {
    "$__rate_interval": "15s",
    "$__interval": "5s",
    "$service": ".*",
    "$message_type": ".*",
}
_METRIC = re.compile(r"\b(commbus_[a-z_]+)\b")
_FUNCTION_OR_KEYWORD = re.compile(r"\b[a-z_]+\s*\(")


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


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(panel title/refId, PromQL with variables substituted)`` for every target."""
    out = []
    for panel in data_panels(dashboard):
        for target in panel["targets"]:
            out.append((f"{panel['title']}/{target['refId']}", substitute(target["expr"])))
    return out


def variable_queries(dashboard: dict[str, Any]) -> list[str]:
    return [v["query"]["query"] for v in dashboard["templating"]["list"]]


def substitute(expr: str) -> str:
    for variable, value in SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric names (series names, e.g. ``..._bucket``) used in a PromQL expression."""
    return set(_METRIC.findall(expr))


def require_tool(path: str) -> str:
    """``path`` if it is installed; skip when it is not, unless running in CI (then fail)."""
    found = shutil.which(path)
    if found:
        return found
    unavailable(f"{path} is not installed")
