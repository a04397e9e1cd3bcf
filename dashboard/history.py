"""The window's figures from the endpoint's own history (``/api/history``), pure functions.

Load, queue depth and in-flight are time-weighted averages and peaks over the window, and
dispatch, error, timeout and retry counts are summed over it, from samples the endpoint
kept itself: a page opened a second ago shows the past window at once. Bus handler runs
are attributed to the service whose name matches the handler's class (``Audit.on_event``
counts for ``audit``; case, ``_`` and ``-`` are ignored), so a subscriber-only service
shows the events it handled, their latency and failures.

The JSON is untrusted: every number is type-checked; a malformed part is left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

__all__ = [
    "HISTORY_COLUMNS",
    "apply_history",
    "handler_owner",
    "history_frames",
    "history_retries",
]

HISTORY_COLUMNS = [
    "endpoint", "name", "capacity", "load_avg", "load_peak", "queue_avg", "queue_peak",
    "requests", "errors", "timeouts", "retries", "seconds", "since", "until",
]  # fmt: skip
HANDLER_COLUMNS = ["endpoint", "handler", "events", "errors", "seconds"]


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _window_index(payload: Mapping[str, Any], window_s: float) -> tuple[list[float], int, float]:
    """Bucket starts, the first bucket inside the window, and ``generated_at``."""
    raw = payload.get("buckets")
    starts = [v for v in (_num(b) for b in raw) if v is not None] if isinstance(raw, list) else []
    until = _num(payload.get("generated_at")) or 0.0
    if len(starts) != (len(raw) if isinstance(raw, list) else 0):
        return [], 0, until
    first = next((i for i, s in enumerate(starts) if s >= until - window_s - 1e-9), len(starts))
    return starts, first, until


def _durations(starts: list[float], until: float) -> list[float]:
    ends = [*starts[1:], until]
    return [max(0.0, e - s) for s, e in zip(starts, ends, strict=True)]


def _gauge(entry: Any, first: int, weights: list[float]) -> tuple[float, float]:
    """Time-weighted average and peak of a gauge from bucket ``first`` on."""
    if not isinstance(entry, Mapping):
        return 0.0, 0.0
    avgs, peaks = entry.get("avgs"), entry.get("peaks")
    if not isinstance(avgs, list) or not isinstance(peaks, list):
        return 0.0, 0.0
    total = covered = peak = 0.0
    for i in range(first, min(len(avgs), len(peaks), len(weights))):
        avg, top = _num(avgs[i]), _num(peaks[i])
        if avg is not None:
            total += avg * weights[i]
            covered += weights[i]
        if top is not None:
            peak = max(peak, top)
    return (total / covered if covered else 0.0), peak


def _sum(entry: Any, first: int) -> float:
    buckets = entry.get("buckets") if isinstance(entry, Mapping) else None
    if not isinstance(buckets, list):
        return 0.0
    return sum(max(0.0, _num(v) or 0.0) for v in buckets[first:])


def history_frames(
    payloads: Mapping[str, Any], window_s: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(services, handlers)`` over the last ``window_s`` seconds of each endpoint's
    ``/api/history`` body (``{endpoint: body}``). ``since``/``until`` say which span each
    service's figures really cover."""
    rows: list[dict[str, Any]] = []
    handler_rows: list[dict[str, Any]] = []
    for endpoint, payload in payloads.items():
        if not isinstance(payload, Mapping):
            continue
        starts, first, until = _window_index(payload, window_s)
        if not starts:
            continue
        weights = _durations(starts, until)
        since = max(
            starts[first] if first < len(starts) else until, _num(payload.get("since")) or 0
        )
        services = payload.get("services")
        for name, entry in (services if isinstance(services, Mapping) else {}).items():
            if not isinstance(name, str) or not isinstance(entry, Mapping):
                continue
            load_avg, load_peak = _gauge(entry.get("load"), first, weights)
            queue_avg, queue_peak = _gauge(entry.get("queue"), first, weights)
            rows.append(
                {
                    "endpoint": endpoint,
                    "name": name,
                    "capacity": max(0.0, _num(entry.get("capacity")) or 0.0),
                    "load_avg": load_avg,
                    "load_peak": load_peak,
                    "queue_avg": queue_avg,
                    "queue_peak": queue_peak,
                    **{k: _sum(entry.get(k), first) for k in HISTORY_COLUMNS[7:12]},
                    "since": since,
                    "until": until,
                }
            )
        handlers = payload.get("handlers")
        for name, entry in (handlers if isinstance(handlers, Mapping) else {}).items():
            if isinstance(name, str) and isinstance(entry, Mapping):
                handler_rows.append(
                    {
                        "endpoint": endpoint,
                        "handler": name,
                        **{k: _sum(entry.get(k), first) for k in HANDLER_COLUMNS[2:]},
                    }
                )
    return (
        pd.DataFrame(rows, columns=HISTORY_COLUMNS),
        pd.DataFrame(handler_rows, columns=HANDLER_COLUMNS),
    )


def _norm(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def handler_owner(handler: str, services: Sequence[str]) -> str | None:
    """The service a bus handler belongs to: the one named like the handler's class."""
    parts = [p for p in handler.split(".") if p]
    if len(parts) < 2:
        return None
    wanted = _norm(parts[-2])
    return next((s for s in services if _norm(s) == wanted), None)


def apply_history(
    services: pd.DataFrame, history: pd.DataFrame, handlers: pd.DataFrame
) -> pd.DataFrame:
    """``services`` (the registry snapshot) with its figures replaced by the window's:
    load and queue as time-weighted averages (``load_peak``/``queue_peak`` added),
    counts summed over the window, bus handler runs (``events``) added to what a service
    handled, and latency and failure share recomputed over both. A service without
    history keeps its snapshot figures (``windowed`` is ``False`` for it)."""
    out = services.copy()
    out["events"] = 0
    out["load_peak"] = out["load"].astype(float)
    out["queue_peak"] = out["queue_depth"].astype(float)
    out["windowed"] = False
    if out.empty:
        return out
    owned: dict[tuple[str, str], list[float]] = {}
    hrows: list[dict[Any, Any]] = handlers.to_dict("records")
    for h in hrows:
        names = list(out.loc[out["endpoint"] == h["endpoint"], "name"])
        owner = handler_owner(str(h["handler"]), names)
        if owner is not None:
            acc = owned.setdefault((str(h["endpoint"]), owner), [0.0, 0.0, 0.0])
            acc[0] += float(h["events"])
            acc[1] += float(h["errors"])
            acc[2] += float(h["seconds"])
    keyed: dict[tuple[Any, Any], dict[Any, Any]] = {
        (r["endpoint"], r["name"]): r for r in history.to_dict("records")
    }
    records: list[dict[Any, Any]] = out.to_dict("records")
    for row in records:
        found = keyed.get((row["endpoint"], row["name"]))
        if found is None:
            continue
        h = found
        events, failed, handler_s = owned.get((row["endpoint"], row["name"]), [0.0, 0.0, 0.0])
        handled = float(h["requests"]) + events
        bad = float(h["errors"]) + failed + float(h["timeouts"])
        load_avg = float(h["load_avg"])
        capacity = float(row["capacity"])
        row.update(
            load=round(load_avg, 2),
            load_peak=float(h["load_peak"]),
            queue_depth=round(float(h["queue_avg"]), 2),
            queue_peak=float(h["queue_peak"]),
            requests=int(h["requests"]),
            events=int(events),
            errors=int(float(h["errors"]) + failed),
            timeouts=int(h["timeouts"]),
            retries=int(h["retries"]),
            error_pct=100.0 * bad / handled if handled else 0.0,
            avg_latency_ms=1000.0 * (float(h["seconds"]) + handler_s) / handled if handled else 0.0,
            load_pct=min(100.0, 100.0 * load_avg / capacity) if capacity else 0.0,
            windowed=True,
        )
    return pd.DataFrame(records, columns=out.columns)


def history_retries(payloads: Mapping[str, Any], since: float, now: float) -> pd.DataFrame:
    """Retries per history bucket (all services of all endpoints summed) for complete
    buckets that start at or after ``since``: ``bucket, kind, count``."""
    rows: list[dict[str, Any]] = []
    for payload in payloads.values():
        if not isinstance(payload, Mapping):
            continue
        starts, _, until = _window_index(payload, float("inf"))
        step = _num(payload.get("step")) or 0.0
        services = payload.get("services")
        for entry in (services if isinstance(services, Mapping) else {}).values():
            retries = entry.get("retries") if isinstance(entry, Mapping) else None
            buckets = retries.get("buckets") if isinstance(retries, Mapping) else None
            if not isinstance(buckets, list):
                continue
            for start, count in zip(starts, buckets, strict=False):
                value = _num(count)
                if value and start >= since and start + step <= min(now, until):
                    rows.append({"time": start, "count": value})
    frame = pd.DataFrame(rows, columns=["time", "count"])
    grouped = frame.groupby("time")["count"].sum().reset_index()
    return pd.DataFrame(
        {
            "bucket": pd.to_datetime(grouped["time"], unit="s", utc=True),
            "kind": "retries",
            "count": grouped["count"].astype(int),
        },
        columns=["bucket", "kind", "count"],
    )
