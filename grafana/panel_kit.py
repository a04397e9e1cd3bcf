"""The pieces panels are made of: one target, one panel, a rate, a quantile set.

Every series selector goes through :func:`series`, which adds the ``job`` and ``instance``
matchers, so no query of the dashboard can miss the deployment filter; every panel and
target reads the ``${datasource}`` variable (:data:`DS`), so no data source uid is written
anywhere.
"""

from __future__ import annotations

from typing import Any

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
STAT: dict[str, Any] = {"kind": "stat", "width": 6, "height": 4}
BARS: dict[str, Any] = {
    "options": {
        "orientation": "horizontal",
        "displayMode": "gradient",
        "reduceOptions": {"calcs": ["lastNotNull"]},
    }
}
