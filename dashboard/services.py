"""The service registry table: rows from each endpoint's ``/api/services`` JSON (checked
and clipped field by field), filters and the view the page shows. Pure data, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from .fields import count, number, text

__all__ = [
    "REGISTRY_SHOWN",
    "SERVICE_COLUMNS",
    "filter_services",
    "registry_view",
    "services_frame",
]

SERVICE_COLUMNS = [
    "endpoint",
    "name",
    "type",
    "version",
    "capabilities",
    "health",
    "load",
    "capacity",
    "load_pct",
    "queue_depth",
    "requests",
    "errors",
    "timeouts",
    "retries",
    "error_pct",
    "avg_latency_ms",
]


def services_frame(payloads: Mapping[str, Any]) -> pd.DataFrame:
    """One row per service from ``{endpoint: /api/services JSON}``."""
    rows = []
    for endpoint, payload in payloads.items():
        services = payload.get("services") if isinstance(payload, Mapping) else None
        for svc in services if isinstance(services, list) else []:
            if not isinstance(svc, Mapping) or not text(svc.get("name")):
                continue
            load = count(svc.get("current_load"))
            capacity = count(svc.get("max_concurrent"))
            requests = count(svc.get("requests"))
            errors = count(svc.get("errors"))
            timeouts = count(svc.get("timeouts"))
            caps = svc.get("capabilities")
            rows.append(
                {
                    "endpoint": endpoint,
                    "name": text(svc.get("name")),
                    "type": text(svc.get("service_type"), "unknown") or "unknown",
                    "version": text(svc.get("version")),
                    "capabilities": [text(c) for c in caps if isinstance(c, str)]
                    if isinstance(caps, list)
                    else [],
                    "health": "healthy" if svc.get("healthy") is True else "unhealthy",
                    "load": load,
                    "capacity": capacity,
                    "load_pct": min(100.0, 100.0 * load / capacity) if capacity else 0.0,
                    "queue_depth": count(svc.get("queue_depth")),
                    "requests": requests,
                    "errors": errors,
                    "timeouts": timeouts,
                    "retries": count(svc.get("retries")),
                    "error_pct": 100.0 * (errors + timeouts) / requests if requests else 0.0,
                    "avg_latency_ms": number(svc.get("avg_latency_ms")),
                }
            )
    return pd.DataFrame(rows, columns=SERVICE_COLUMNS)


def filter_services(frame: pd.DataFrame, types: Sequence[str], health: str) -> pd.DataFrame:
    """Rows of the chosen ``types`` (none chosen = all) and ``health``
    (``"all"``, ``"healthy"`` or ``"unhealthy"``)."""
    mask = pd.Series(True, index=frame.index)
    if types:
        mask &= frame["type"].isin(list(types))
    if health in ("healthy", "unhealthy"):
        mask &= frame["health"] == health
    return frame[mask].reset_index(drop=True)


#: The registry columns the page shows, in order (the others stay in the frame, for tests
#: and for sorting): narrow enough to fit a 1600 px wide page with the sidebar open.
REGISTRY_SHOWN = [
    "name", "type", "version", "health", "slots", "load_pct", "queue", "requests", "events",
    "problems", "error_pct", "avg_latency_ms", "capabilities",
]  # fmt: skip


def registry_view(frame: pd.DataFrame, with_endpoint: bool) -> pd.DataFrame:
    """The registry table: health with a marker, load as ``average (peak …) / capacity``
    and queue as ``average (peak …)`` (see :func:`dashboard.history.apply_history`),
    errors / timeouts / retries in one cell."""
    peaks = frame["load_peak"] if "load_peak" in frame else frame["load"]
    view = frame.assign(
        health=frame["health"].map({"healthy": "● healthy", "unhealthy": "● unhealthy"}),
        slots=[
            f"{float(a):.1f} (peak {float(p):g}) / {b}"
            for a, p, b in zip(frame["load"], peaks, frame["capacity"], strict=True)
        ],
    )
    for column in ("queue_peak", "events"):
        if column not in view:
            view[column] = 0
    view["queue"] = [
        f"{float(a):.1f} (peak {float(p):g})"
        for a, p in zip(view["queue_depth"], view["queue_peak"], strict=True)
    ]
    view["problems"] = [
        f"{e} / {t} / {r}"
        for e, t, r in zip(view["errors"], view["timeouts"], view["retries"], strict=True)
    ]
    columns = [
        "name", "type", "version", "health", "slots", "load_pct", "queue_depth", "queue_peak",
        "queue", "requests", "events", "errors", "timeouts", "retries", "problems", "error_pct",
        "avg_latency_ms", "capabilities",
    ]  # fmt: skip
    if with_endpoint:
        columns.append("endpoint")
    return view[columns].sort_values(["type", "name"]).reset_index(drop=True)
