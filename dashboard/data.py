"""Pure data shaping for the dashboard: JSON from the observability endpoint in, frames out.

The registry table is shaped in :mod:`.services`, field checks are in :mod:`.fields`
(both re-exported here). Nothing here does I/O or touches Streamlit, so every function is
unit-tested on plain data.
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

from .fields import MAX_TEXT, count, md_escape, number, text
from .services import (
    REGISTRY_SHOWN,
    SERVICE_COLUMNS,
    filter_services,
    registry_view,
    services_frame,
)

__all__ = [
    "ENV_VAR",
    "MAX_TEXT",
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
    newest = count(last_seq)
    if after is None or newest < after:
        return max(0, newest - limit)
    return max(after, fetched_max or 0)


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
        "time": number(record.get("time")),
        "pattern": pattern,
        "message_type": text(record.get("message_type"), "?") or "?",
        "targets": tuple(text(t) for t in targets if isinstance(t, str))
        if isinstance(targets, list)
        else (),
        "duration_ms": max(0.0, number(record.get("duration_ms"))),
        "outcome": text(record.get("outcome"), "unknown") or "unknown",
        "error_type": text(record.get("error_type")) or None,
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
