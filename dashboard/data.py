"""Pure data shaping for the dashboard: JSON from the observability endpoint in, frames out.

Nothing here does I/O or touches Streamlit, so every function is unit-tested on plain data.
The endpoint's JSON is treated as untrusted: every field is type-checked and clipped before
it reaches a table, a chart or the graph source.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

__all__ = [
    "ENV_VAR",
    "PATTERNS",
    "REGISTRY_SHOWN",
    "SERVICE_COLUMNS",
    "TRACE_URL_VAR",
    "Coverage",
    "bucket_seconds",
    "coverage",
    "filter_services",
    "flow_frame",
    "latest_messages",
    "md_escape",
    "merge_records",
    "next_cursor",
    "normalize_record",
    "parse_endpoints",
    "registry_view",
    "services_frame",
    "short_target",
    "trace_link",
]

#: Environment variable holding comma-separated endpoint URLs.
ENV_VAR = "JEEVES_ENDPOINTS"
PATTERNS = ("publish", "send", "query", "dispatch")
MAX_TEXT = 120

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

FLOW_COLUMNS = [
    "endpoint",
    "seq",
    "time",
    "pattern",
    "message_type",
    "targets",
    "duration_ms",
    "outcome",
    "error_type",
    "trace_id",
]


def _text(value: Any, default: str = "") -> str:
    """A display-safe string: non-strings become ``default``, long ones are clipped."""
    if not isinstance(value, str):
        return default
    text: str = value.replace("\n", " ").replace("\r", " ")
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _number(value: Any, default: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return float(value) if math.isfinite(value) else default


def _count(value: Any) -> int:
    return max(0, int(_number(value)))


def md_escape(value: object) -> str:
    """``value`` as literal text inside Streamlit markdown: every ASCII punctuation mark is
    backslash-escaped (no links, images, emphasis, ``:colour[...]`` directives or emoji
    shortcodes can be smuggled in) and line breaks become spaces."""
    text = " ".join(str(value).split())
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in text)


_MD_SPECIAL = frozenset("\\`*_{}[]()<>#+-.!|~:$&\"'=/@%^;,?")


def bucket_seconds(window_s: float) -> float:
    """Time-bucket width for the charts: about 30-60 buckets per window."""
    for width in (1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0):
        if window_s / width <= 60:
            return width
    return 120.0


@dataclass(frozen=True)
class Coverage:
    """The time the flow data really covers, per endpoint (see :func:`coverage`).

    ``starts`` maps each endpoint to where its data begins; :meth:`span` is the seconds
    from there to ``now`` (at least 1). A rate is summed over endpoints, each endpoint's
    count over its own span (:meth:`rate`), so a quiet endpoint or one whose buffer is
    short does not change the span of a busy one."""

    now: float
    window_start: float
    starts: Mapping[str, float]

    @property
    def since(self) -> float:
        """Where the earliest endpoint's data begins (``now`` with no data)."""
        return min(self.starts.values(), default=self.now)

    def span(self, endpoint: str) -> float:
        return max(self.now - self.starts.get(endpoint, self.window_start), 1.0)

    def rate(self, counts: Mapping[str, float]) -> float:
        """Per second: the sum over endpoints of their count over their own span."""
        return sum(n / self.span(endpoint) for endpoint, n in counts.items() if n)


def coverage(
    records: Iterable[Mapping[Any, Any]],
    now: float,
    window_s: float,
    started: Mapping[str, float | None] | None = None,
) -> Coverage:
    """Where each endpoint's flow data really begins within the window.

    An endpoint's data covers the whole window unless records were evicted (by its ring
    buffer, or by the dashboard's own bound): nothing was if its first record ever
    (``seq`` 1) is still here, and then the data covers from the window's start or from
    when the endpoint started (``started``: Unix seconds, from ``/api/stats``
    ``uptime_seconds``), whichever is later. Otherwise it covers from its oldest record
    kept, or from the window's start if that record is older. Every rate on the page is
    over these spans, never over the nominal window, and never over the span of another
    endpoint."""
    window_start = now - window_s
    oldest: dict[str, float] = {}
    first_seq: dict[str, int] = {}
    for r in records:
        endpoint, t, seq = r["endpoint"], r["time"], r["seq"]
        if t < oldest.get(endpoint, math.inf):
            oldest[endpoint] = t
        first_seq[endpoint] = min(seq, first_seq.get(endpoint, seq))
    starts: dict[str, float] = {}
    for endpoint, t in oldest.items():
        if t <= window_start:
            starts[endpoint] = window_start
        elif first_seq[endpoint] == 1:  # nothing evicted: since the window or its start
            up = (started or {}).get(endpoint)
            starts[endpoint] = max(window_start, min(t, window_start if up is None else up))
        else:  # evicted: the data begins at the oldest record kept
            starts[endpoint] = min(t, now)
    return Coverage(now, window_start, starts)


#: Environment variable holding the trace UI's URL template, with ``{trace_id}``.
TRACE_URL_VAR = "JEEVES_TRACE_URL"


def trace_link(template: str, trace_id: str) -> str:
    """The trace UI's URL for ``trace_id`` ("" when there is no id, or when the template
    is not an http(s) URL with a ``{trace_id}`` placeholder)."""
    if not trace_id or "{trace_id}" not in template:
        return ""
    if urlsplit(template).scheme not in ("http", "https"):
        return ""
    return template.replace("{trace_id}", trace_id)


# ---------------------------------------------------------------------- endpoints


def parse_endpoints(*sources: str | None) -> tuple[list[str], list[str]]:
    """Split comma/whitespace-separated endpoint lists into ``(valid, rejected)``.

    A bare ``host:port`` gets ``http://``; trailing slashes go; duplicates keep their first
    position. Anything that is not an http(s) URL with a host is rejected.
    """
    valid: list[str] = []
    rejected: list[str] = []
    for source in sources:
        for raw in (source or "").replace(",", " ").split():
            url = raw if "://" in raw else f"http://{raw}"
            parts = urlsplit(url)
            try:
                parts.port  # noqa: B018 - raises ValueError for a bad port
            except ValueError:
                rejected.append(raw)
                continue
            if parts.scheme not in ("http", "https") or not parts.hostname:
                rejected.append(raw)
                continue
            url = url.rstrip("/")
            if url not in valid:
                valid.append(url)
    return valid, rejected


def next_cursor(after: int | None, last_seq: Any, fetched_max: int | None, limit: int) -> int:
    """The ``after`` to use for the next ``/api/flow`` call.

    First call (``after is None``): start ``limit`` records before the newest, so the
    dashboard opens on recent traffic. A ``last_seq`` below our cursor means the endpoint
    restarted: start over from its newest records.
    """
    newest = _count(last_seq)
    if after is None or newest < after:
        return max(0, newest - limit)
    return max(after, fetched_max or 0)


# ---------------------------------------------------------------------- services


def services_frame(payloads: Mapping[str, Any]) -> pd.DataFrame:
    """One row per service from ``{endpoint: /api/services JSON}``."""
    rows = []
    for endpoint, payload in payloads.items():
        services = payload.get("services") if isinstance(payload, Mapping) else None
        for svc in services if isinstance(services, list) else []:
            if not isinstance(svc, Mapping) or not _text(svc.get("name")):
                continue
            load = _count(svc.get("current_load"))
            capacity = _count(svc.get("max_concurrent"))
            requests = _count(svc.get("requests"))
            errors = _count(svc.get("errors"))
            timeouts = _count(svc.get("timeouts"))
            caps = svc.get("capabilities")
            rows.append(
                {
                    "endpoint": endpoint,
                    "name": _text(svc.get("name")),
                    "type": _text(svc.get("service_type"), "unknown") or "unknown",
                    "version": _text(svc.get("version")),
                    "capabilities": [_text(c) for c in caps if isinstance(c, str)]
                    if isinstance(caps, list)
                    else [],
                    "health": "healthy" if svc.get("healthy") is True else "unhealthy",
                    "load": load,
                    "capacity": capacity,
                    "load_pct": min(100.0, 100.0 * load / capacity) if capacity else 0.0,
                    "queue_depth": _count(svc.get("queue_depth")),
                    "requests": requests,
                    "errors": errors,
                    "timeouts": timeouts,
                    "retries": _count(svc.get("retries")),
                    "error_pct": 100.0 * (errors + timeouts) / requests if requests else 0.0,
                    "avg_latency_ms": _number(svc.get("avg_latency_ms")),
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


# ---------------------------------------------------------------------- flow records


def normalize_record(record: Any, endpoint: str) -> dict[str, Any] | None:
    """A flow record with checked types, or ``None`` when it is unusable."""
    if not isinstance(record, Mapping):
        return None
    seq = record.get("seq")
    pattern = record.get("pattern")
    if isinstance(seq, bool) or not isinstance(seq, int) or pattern not in PATTERNS:
        return None
    targets = record.get("targets")
    trace = record.get("trace_id")
    return {
        "endpoint": endpoint,
        "seq": seq,
        "time": _number(record.get("time")),
        "pattern": pattern,
        "message_type": _text(record.get("message_type"), "?") or "?",
        "targets": tuple(_text(t) for t in targets if isinstance(t, str))
        if isinstance(targets, list)
        else (),
        "duration_ms": max(0.0, _number(record.get("duration_ms"))),
        "outcome": _text(record.get("outcome"), "unknown") or "unknown",
        "error_type": _text(record.get("error_type")) or None,
        "trace_id": trace if isinstance(trace, str) and len(trace) == 32 else None,
    }


def merge_records(
    existing: Sequence[dict[str, Any]],
    endpoint: str,
    incoming: Iterable[Any],
    keep: int,
) -> tuple[list[dict[str, Any]], int | None]:
    """Append ``incoming`` (raw JSON records of ``endpoint``) to ``existing``, drop
    duplicates, keep the newest ``keep``. Returns the merged list and the highest ``seq``
    seen in ``incoming`` (``None`` if none was usable)."""
    seen = {(r["endpoint"], r["seq"]) for r in existing}
    merged = list(existing)
    highest: int | None = None
    for raw in incoming:
        record = normalize_record(raw, endpoint)
        if record is None:
            continue
        highest = record["seq"] if highest is None else max(highest, record["seq"])
        if (endpoint, record["seq"]) not in seen:
            seen.add((endpoint, record["seq"]))
            merged.append(record)
    if len(merged) > keep:
        merged.sort(key=lambda r: r["time"])
        merged = merged[-keep:]
    return merged, highest


def flow_frame(records: Sequence[dict[str, Any]], now: float, window_s: float) -> pd.DataFrame:
    """Records of the last ``window_s`` seconds, oldest first, with a datetime column."""
    frame = pd.DataFrame(list(records), columns=FLOW_COLUMNS)
    # typed even when empty: an empty frame's columns are object, and pandas 2.3 refuses
    # numeric operations (``round``) on object columns
    frame = frame.astype({"seq": "int64", "time": "float64", "duration_ms": "float64"})
    frame = frame[frame["time"] >= now - window_s].sort_values(["time", "seq"])
    frame = frame.reset_index(drop=True)
    frame["at"] = pd.to_datetime(frame["time"], unit="s", utc=True)
    frame["failed"] = frame["outcome"] != "ok"
    return frame


def short_target(name: str) -> str:
    """``pkg.module.Class.method`` -> ``Class.method``; a service name stays as it is."""
    parts = [p for p in name.split(".") if p]
    return ".".join(parts[-2:]) if len(parts) > 2 else name


def latest_messages(frame: pd.DataFrame, limit: int = 50) -> pd.DataFrame:
    """The newest ``limit`` messages, newest first, in the columns the table shows."""
    recent = frame.sort_values(["time", "seq"], ascending=False).head(limit)
    return pd.DataFrame(
        {
            "time": recent["at"],
            "pattern": recent["pattern"],
            "type": recent["message_type"],
            "target": [", ".join(short_target(t) for t in ts) or "—" for ts in recent["targets"]],
            "duration_ms": recent["duration_ms"].round(2),
            "outcome": recent["outcome"],
            "error": recent["error_type"].fillna(""),
            "trace_id": recent["trace_id"].fillna(""),
        }
    ).reset_index(drop=True)
