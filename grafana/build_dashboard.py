"""Generates grafana/dashboards/jeeves-commbus.json (run it after editing the panels).

Panels are declared as data; the layout (``gridPos``) is computed row by row so panels can
never overlap. ``python grafana/build_dashboard.py --check`` exits 1 when the checked-in JSON
is stale.

Portable by construction: every panel and target reads the ``${datasource}`` variable (no
data source uid is written anywhere), ``__inputs`` makes Grafana's "Import dashboard" ask
for a Prometheus data source (``DS_PROMETHEUS`` becomes the variable's initial value), and
every series selector goes through :func:`series`, which adds the ``job`` and ``instance``
matchers so two deployments scraped by one Prometheus are never summed together.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "dashboards" / "jeeves-commbus.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
RI = "$__rate_interval"
#: The matchers every series selector carries (see :func:`series`).
DEPLOYMENT = 'job=~"$job", instance=~"$instance"'
MSG = 'message_type=~"$message_type"'
SVC = 'service=~"$service"'
LEGEND = {"displayMode": "table", "placement": "right", "calcs": ["mean", "max"]}
#: Failed as the alert rules count it: a duplicate dropped by dedupe ("aborted") or a
#: cancelled caller is not a failure of the bus.
FAILED = MSG + ', outcome=~"error|timeout|no_handler"'


def series(metric: str, *matchers: str) -> str:
    """``metric{job=~"$job", instance=~"$instance", <matchers>}``: the only way a panel
    names a series, so no query can miss the deployment filter."""
    return f"{metric}{{{', '.join((DEPLOYMENT, *matchers))}}}"


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
    buckets = f"rate({series(metric + '_bucket', selector)}[{RI}])"
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


def rate(metric: str, by: str, *matchers: str) -> str:
    return f"sum by ({by}) (rate({series(metric, *matchers)}[{RI}]))"


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
WIRE = (
    "Frames that crossed a broker (Redis, NATS): sent = accepted by the broker client,"
    " received = decoded. Empty for a process on the in-memory bus only."
)
REJECTED = "Frames the wire codec refused (malformed, too deep, too large...): never handled."
DROPPED = "Events accepted by publish and lost before the broker client took them."
TELEMETRY = "Failures inside telemetry hooks, by component: caught, messages are unaffected."
LOAD = f"sum by (service) ({series('commbus_service_load', SVC)})"
CAPACITY = f"sum by (service) ({series('commbus_service_capacity', SVC)})"
ALL_MESSAGES = f"sum(rate({series('commbus_messages_total', MSG)}[{RI}]))"
FAILED_MESSAGES = f"sum(rate({series('commbus_messages_total', FAILED)}[{RI}]))"
INFLIGHT = f"sum by (pattern) ({series('commbus_inflight_messages')})"
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
                    target(f"sum({series('commbus_service_healthy', SVC)})", "healthy", "A"),
                    target(f"sum({series('commbus_services_registered')})", "registered", "B"),
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
                            'pattern="dispatch"',
                            'target=~"$service"',
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
                    target(series("commbus_service_load", SVC), "load {{service}}", "A"),
                    target(series("commbus_service_capacity", SVC), "capacity {{service}}", "B"),
                ],
            ),
            panel(
                "Queue depth",
                [target(series("commbus_service_queue_depth", SVC), "{{service}}", "A")],
            ),
            panel(
                "Health",
                [target(series("commbus_service_healthy", SVC), "{{service}}", "A")],
                kind="state-timeline",
                extra={"options": {"showValue": "never", "mergeValues": True}},
            ),
            panel(
                "Registered services by type",
                [
                    target(
                        f"sum by (service_type) ({series('commbus_services_registered')})",
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
    (
        "Transport",
        [
            panel(
                "Wire frames",
                [
                    target(
                        rate("commbus_wire_messages_total", "transport, direction, pattern"),
                        "{{transport}} {{direction}} {{pattern}}",
                        "A",
                    )
                ],
                unit="reqps",
                description=WIRE,
            ),
            panel(
                "Rejected frames",
                [
                    target(
                        rate("commbus_wire_rejected_total", "transport, reason"),
                        "{{transport}} {{reason}}",
                        "A",
                    )
                ],
                unit="reqps",
                description=REJECTED,
            ),
            panel(
                "Reconnects and redeliveries",
                [
                    target(
                        rate("commbus_transport_reconnects_total", "transport"),
                        "reconnects {{transport}}",
                        "A",
                    ),
                    target(
                        rate("commbus_transport_redeliveries_total", "transport"),
                        "redeliveries {{transport}}",
                        "B",
                    ),
                ],
                unit="reqps",
                width=8,
            ),
            panel(
                "Buffered while the broker is away",
                [
                    target(
                        f"sum by (transport) ({series('commbus_transport_buffered_messages')})",
                        "{{transport}}",
                        "A",
                    )
                ],
                width=8,
            ),
            panel(
                "Dropped events",
                [
                    target(
                        rate("commbus_transport_dropped_events_total", "transport"),
                        "{{transport}}",
                        "A",
                    )
                ],
                unit="reqps",
                width=8,
                description=DROPPED,
            ),
        ],
    ),
    (
        "Dead letters and telemetry",
        [
            panel(
                "Dead letters by type",
                [
                    target(
                        rate("commbus_dead_letters_total", "transport, type"),
                        "{{transport}} {{type}}",
                        "A",
                    )
                ],
                unit="reqps",
                width=8,
            ),
            panel(
                "Dead-letter depth",
                [
                    target(
                        f"sum by (transport) ({series('commbus_dead_letter_depth')})",
                        "{{transport}}",
                        "A",
                    )
                ],
                width=8,
                description="Entries waiting in the dead-letter store; it should not grow.",
            ),
            panel(
                "Telemetry errors",
                [
                    target(
                        rate("commbus_telemetry_errors_total", "component"),
                        "{{component}}",
                        "A",
                    )
                ],
                unit="reqps",
                width=8,
                description=TELEMETRY,
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
