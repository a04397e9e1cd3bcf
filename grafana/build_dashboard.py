"""Generates grafana/dashboards/jeeves-commbus.json (run it after editing the panels).

Panels are declared as data; the layout (``gridPos``) is computed row by row so panels can
never overlap. ``python grafana/build_dashboard.py --check`` exits 1 when the checked-in JSON
is stale.

Portable by construction: every panel and target reads the ``${datasource}`` variable (no
data source uid is written anywhere), ``__inputs`` makes Grafana's "Import dashboard" ask
for a Prometheus data source (``DS_PROMETHEUS`` becomes the variable's initial value), and
every series selector goes through :func:`series`, which adds the ``job`` and ``instance``
matchers so two deployments scraped by one Prometheus are never summed together.

The panels are declared in ``panel_rows.py``, built from the pieces in ``panel_kit.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from panel_kit import DS, HEALTH_MAPPING, series
from panel_rows import ROWS

OUT = Path(__file__).parent / "dashboards" / "jeeves-commbus.json"


def layout() -> list[dict[str, Any]]:
    """Rows of panels, each row flowing left to right and wrapping at 24 columns."""
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for title, row in ROWS:
        panels.append(
            {"type": "row", "title": title, "id": next_id, "collapsed": False, "panels": [],
             "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}}
        )  # fmt: skip
        next_id += 1
        y += 1
        x = 0
        row_height = 0
        for p in row:
            w, h = p.pop("_size")
            if x + w > 24:
                x, y, row_height = 0, y + row_height, 0
            p["id"] = next_id
            next_id += 1
            p["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
            if p["type"] == "state-timeline":
                p["fieldConfig"]["defaults"]["mappings"] = HEALTH_MAPPING
            panels.append(p)
            x += w
            row_height = max(row_height, h)
        y += row_height
    return panels


def datasource_variable() -> dict[str, Any]:
    """The ``${datasource}`` every panel reads. Imported through "Import dashboard", its
    initial value is the data source chosen for ``DS_PROMETHEUS``; provisioned from a file
    (``${DS_PROMETHEUS}`` left as is, matching no data source) Grafana falls back to the
    first Prometheus data source."""
    initial = "${DS_PROMETHEUS}"
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "regex": "",
        "refresh": 1,
        "hide": 0,
        "multi": False,
        "includeAll": False,
        "options": [],
        "current": {"selected": False, "text": initial, "value": initial},
    }


INPUTS = [
    {
        "name": "DS_PROMETHEUS",
        "label": "Prometheus",
        "description": "The Prometheus that scrapes the processes' /metrics",
        "type": "datasource",
        "pluginId": "prometheus",
        "pluginName": "Prometheus",
    }
]
REQUIRES = [
    {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
    {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
] + [
    {"type": "panel", "id": kind, "name": name, "version": ""}
    for kind, name in (
        ("bargauge", "Bar gauge"),
        ("stat", "Stat"),
        ("state-timeline", "State timeline"),
        ("timeseries", "Time series"),
    )
]
#: Which deployment (``job``, then ``instance`` within it) every query looks at.
JOB_QUERY = "label_values(commbus_messages_total, job)"
INSTANCE_QUERY = 'label_values(commbus_messages_total{job=~"$job"}, instance)'


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-var"},
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def dashboard() -> dict[str, Any]:
    return {
        "__inputs": INPUTS,
        "__requires": REQUIRES,
        "uid": "jeeves-commbus",
        "title": "Jeeves CommBus",
        "description": (
            "Message flow, dispatch, service health, transports and dead letters of a"
            " Jeeves CommBus."
        ),
        "tags": ["jeeves", "commbus", "ipc"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "5s",
        "time": {"from": "now-15m", "to": "now"},
        "templating": {
            "list": [
                datasource_variable(),
                variable("job", "Job", JOB_QUERY),
                variable("instance", "Instance", INSTANCE_QUERY),
                variable(
                    "service",
                    "Service",
                    f"label_values({series('commbus_service_capacity')}, service)",
                ),
                variable(
                    "message_type",
                    "Message type",
                    f"label_values({series('commbus_messages_total')}, message_type)",
                ),
            ]
        },
        "annotations": {"list": []},
        "links": [],
        "panels": layout(),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if OUT.read_text() == text else 1)
    OUT.write_text(text)
