"""Generates grafana/dashboards/jeeves-commbus.json (run it after editing the panels).

Panels are declared as data; the layout (``gridPos``) is computed row by row so panels can
never overlap. ``python grafana/build_dashboard.py --check`` exits 1 when the checked-in JSON
is stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "dashboards" / "jeeves-commbus.json"
DS = {"type": "prometheus", "uid": "prometheus"}
RI = "$__rate_interval"
MSG = 'message_type=~"$message_type"'
SVC = 'service=~"$service"'
LEGEND = {"displayMode": "table", "placement": "right", "calcs": ["mean", "max"]}
FAILED = MSG + ', outcome!="ok"'


def target(expr: str, legend: str, ref: str, *, exemplar: bool = False) -> dict[str, Any]:
    return {
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend,
        "refId": ref,
        "range": True,
        "exemplar": exemplar,
    }


def quantiles(metric: str, by: str, selector: str) -> list[dict[str, Any]]:
    """p50/p95/p99 of a histogram, with exemplars (they carry the trace id)."""
    buckets = f"rate({metric}_bucket{{{selector}}}[{RI}])"
    return [
        target(
            f"histogram_quantile({q}, sum by (le, {by}) ({buckets}))",
            f"p{round(q * 100)} {{{{{by}}}}}",
            ref,
            exemplar=True,
        )
        for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))
    ]


def panel(
    title: str,
    targets: list[dict[str, Any]],
    *,
    kind: str = "timeseries",
    unit: str = "short",
    width: int = 12,
    height: int = 8,
    description: str = "",
    stack: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    custom: dict[str, Any] = {}
    if kind == "timeseries":
        custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
        if stack:
            custom |= {"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 40}
    p: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, "custom": custom}, "overrides": []},
        "options": {"legend": LEGEND} if kind == "timeseries" else {},
        "_size": (width, height),
    }
    if extra:
        for key, value in extra.items():
            p[key] = value
    return p


def rate(metric: str, by: str, selector: str = "") -> str:
    series = f"{metric}{{{selector}}}" if selector else metric
    return f"sum by ({by}) (rate({series}[{RI}]))"


HEALTH_MAPPING = [
    {
        "type": "value",
        "options": {
            "0": {"text": "unhealthy", "color": "red", "index": 0},
            "1": {"text": "healthy", "color": "green", "index": 1},
        },
    }
]

EXEMPLARS = "Exemplars link a latency point to its trace (Jaeger)."
LOAD = f"sum by (service) (commbus_service_load{{{SVC}}})"
CAPACITY = f"sum by (service) (commbus_service_capacity{{{SVC}}})"
ALL_MESSAGES = f"sum(rate(commbus_messages_total{{{MSG}}}[{RI}]))"
FAILED_MESSAGES = f"sum(rate(commbus_messages_total{{{FAILED}}}[{RI}]))"
INFLIGHT = "sum by (pattern) (commbus_inflight_messages)"
STAT = {"kind": "stat", "width": 6, "height": 4}
BARS = {
    "options": {
        "orientation": "horizontal",
        "displayMode": "gradient",
        "reduceOptions": {"calcs": ["lastNotNull"]},
    }
}

ROWS: list[tuple[str, list[dict[str, Any]]]] = [
    (
        "Overview",
        [
            panel("Message rate", [target(ALL_MESSAGES, "messages/s", "A")], unit="reqps", **STAT),
            panel(
                "Failed messages",
                [target(f"{FAILED_MESSAGES} / {ALL_MESSAGES}", "failed", "A")],
                unit="percentunit",
                **STAT,
            ),
            panel(
                "Healthy services",
                [
                    target(f"sum(commbus_service_healthy{{{SVC}}})", "healthy", "A"),
                    target("sum(commbus_services_registered)", "registered", "B"),
                ],
                **STAT,
            ),
            panel("In flight", [target(INFLIGHT, "{{pattern}}", "A")], **STAT),
        ],
    ),
    (
        "Messages",
        [
            panel(
                "Message rate by pattern",
                [target(rate("commbus_messages_total", "pattern", MSG), "{{pattern}}", "A")],
                unit="reqps",
                stack=True,
            ),
            panel(
                "Message rate by type",
                [
                    target(
                        rate("commbus_messages_total", "pattern, message_type", MSG),
                        "{{pattern}} {{message_type}}",
                        "A",
                    )
                ],
                unit="reqps",
            ),
            panel(
                "Message latency p50 / p95 / p99",
                quantiles("commbus_message_duration_seconds", "pattern", MSG),
                unit="s",
                description=EXEMPLARS,
            ),
            panel(
                "Outcomes by pattern",
                [
                    target(
                        rate("commbus_messages_total", "pattern, outcome", MSG),
                        "{{pattern}} {{outcome}}",
                        "A",
                    )
                ],
                unit="reqps",
                stack=True,
            ),
            panel(
                "Handler errors by type",
                [
                    target(
                        rate(
                            "commbus_handler_errors_total", "pattern, message_type, error_type", MSG
                        ),
                        "{{message_type}} {{error_type}}",
                        "A",
                    )
                ],
                unit="reqps",
            ),
            panel(
                "Timeouts",
                [
                    target(
                        rate("commbus_timeouts_total", "pattern, target"),
                        "{{pattern}} {{target}}",
                        "A",
                    )
                ],
                unit="reqps",
            ),
            panel(
                "Error rate by pattern",
                [
                    target(
                        f"{rate('commbus_messages_total', 'pattern', FAILED)}"
                        f" / {rate('commbus_messages_total', 'pattern', MSG)}",
                        "{{pattern}}",
                        "A",
                    )
                ],
                unit="percentunit",
            ),
            panel("In-flight messages", [target(INFLIGHT, "{{pattern}}", "A")]),
        ],
    ),
    (
        "Dispatch",
        [
            panel(
                "Dispatch outcomes",
                [target(rate("commbus_dispatch_total", "outcome", SVC), "{{outcome}}", "A")],
                unit="reqps",
                stack=True,
            ),
            panel(
                "Dispatch latency p50 / p95 / p99",
                quantiles("commbus_dispatch_duration_seconds", "service", SVC),
                unit="s",
                description=EXEMPLARS,
            ),
            panel(
                "Dispatch retries",
                [
                    target(
                        rate("commbus_dispatch_retries_total", "service, method", SVC),
                        "{{service}}.{{method}}",
                        "A",
                    )
                ],
                unit="reqps",
            ),
            panel(
                "Dispatch timeouts",
                [
                    target(
                        rate(
                            "commbus_timeouts_total",
                            "target",
                            'pattern="dispatch", target=~"$service"',
                        ),
                        "{{target}}",
                        "A",
                    )
                ],
                unit="reqps",
            ),
        ],
    ),
    (
        "Services",
        [
            panel(
                "Load vs capacity",
                [target(f"{LOAD} / {CAPACITY}", "{{service}}", "A")],
                kind="bargauge",
                unit="percentunit",
                extra=BARS,
            ),
            panel(
                "Load and capacity",
                [
                    target(f"commbus_service_load{{{SVC}}}", "load {{service}}", "A"),
                    target(f"commbus_service_capacity{{{SVC}}}", "capacity {{service}}", "B"),
                ],
            ),
            panel(
                "Queue depth",
                [target(f"commbus_service_queue_depth{{{SVC}}}", "{{service}}", "A")],
            ),
            panel(
                "Health",
                [target(f"commbus_service_healthy{{{SVC}}}", "{{service}}", "A")],
                kind="state-timeline",
                extra={"options": {"showValue": "never", "mergeValues": True}},
            ),
            panel(
                "Registered services by type",
                [
                    target(
                        "sum by (service_type) (commbus_services_registered)",
                        "{{service_type}}",
                        "A",
                    )
                ],
                kind="bargauge",
                width=24,
                height=5,
                extra=BARS,
            ),
        ],
    ),
]


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
        "uid": "jeeves-commbus",
        "title": "Jeeves CommBus",
        "description": "Message flow, dispatch and service health of a Jeeves CommBus.",
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
                variable("service", "Service", "label_values(commbus_service_capacity, service)"),
                variable(
                    "message_type",
                    "Message type",
                    "label_values(commbus_messages_total, message_type)",
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
