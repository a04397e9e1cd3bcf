"""Time series and headline numbers from flow records (pure functions, unit-tested).

A chart never shows the bucket that is still filling, so a rate never dips at the right edge.
"""

from __future__ import annotations

import pandas as pd

from .data import Coverage

__all__ = ["kpis", "latency_series", "problem_series", "rate", "throughput_series"]


def _buckets(
    frame: pd.DataFrame, bucket_s: float, now: float, since: float | None = None
) -> pd.DataFrame:
    """``frame`` with a ``bucket`` datetime column, without the still-filling last bucket
    and, given ``since`` (when the data begins), without buckets that start before it."""
    start = (frame["time"] // bucket_s) * bucket_s
    out = frame.assign(bucket_start=start)
    keep = out["bucket_start"] + bucket_s <= now
    if since is not None:
        keep &= out["bucket_start"] >= since
    out = out[keep]
    return out.assign(bucket=pd.to_datetime(out["bucket_start"], unit="s", utc=True))


def throughput_series(
    frame: pd.DataFrame, bucket_s: float, now: float, since: float | None = None
) -> pd.DataFrame:
    """Messages per second per pattern per time bucket: ``bucket, pattern, rate``."""
    data = _buckets(frame, bucket_s, now, since)
    counts = data.groupby(["bucket", "pattern"]).size().reset_index(name="count")
    counts["rate"] = counts["count"] / bucket_s
    return counts[["bucket", "pattern", "rate"]]


def latency_series(
    frame: pd.DataFrame, bucket_s: float, now: float, since: float | None = None
) -> pd.DataFrame:
    """p50 and p95 duration (ms) per pattern per bucket: ``bucket, pattern, quantile,
    latency_ms`` (long form, one row per quantile)."""
    data = _buckets(frame, bucket_s, now, since)
    columns = ["bucket", "pattern", "quantile", "latency_ms"]
    if data.empty:
        return pd.DataFrame(columns=columns)
    grouped = data.groupby(["bucket", "pattern"])["duration_ms"]
    parts = [
        grouped.quantile(q).reset_index(name="latency_ms").assign(quantile=label)
        for q, label in ((0.5, "p50"), (0.95, "p95"))
    ]
    return pd.concat(parts, ignore_index=True)[columns]


def problem_series(
    frame: pd.DataFrame,
    retries: pd.DataFrame,
    bucket_s: float,
    now: float,
    since: float | None = None,
) -> pd.DataFrame:
    """Errors and timeouts per bucket from ``frame``, plus ``retries`` (already bucketed,
    from the endpoint's history): ``bucket, kind, count``."""
    data = _buckets(frame, bucket_s, now, since)
    failed = data[data["failed"]]
    kind = failed["outcome"].where(failed["outcome"] == "timeout", "errors")
    kind = kind.replace("timeout", "timeouts")
    counted = failed.assign(kind=kind).groupby(["bucket", "kind"]).size()
    out = counted.reset_index(name="count")
    parts = [df for df in (out, retries) if not df.empty]
    if not parts:
        return pd.DataFrame(columns=["bucket", "kind", "count"])
    return pd.concat(parts, ignore_index=True)[["bucket", "kind", "count"]]


def kpis(frame: pd.DataFrame, services: pd.DataFrame, span_s: float | Coverage) -> dict[str, float]:
    """Headline numbers: rate (over ``span_s``, the time the flow data covers: with a
    :class:`~dashboard.data.Coverage`, each endpoint's messages over its own span, summed,
    as the graph's edge rates are), error %, p95, healthy/total services, and the queue:
    summed time-weighted average (``queued``) and the highest peak (``queued_peak``)."""
    count = len(frame)
    return {
        "rate": rate(frame, span_s) if count else 0.0,
        "error_pct": 100.0 * float(frame["failed"].mean()) if count else 0.0,
        "p95_ms": float(frame["duration_ms"].quantile(0.95)) if count else 0.0,
        "services": float(len(services)),
        "healthy": float((services["health"] == "healthy").sum()) if len(services) else 0.0,
        "queued": float(services["queue_depth"].sum()) if len(services) else 0.0,
        "queued_peak": float(services[_PEAK].max()) if _PEAK in services and len(services) else 0.0,
    }


_PEAK = "queue_peak"


def rate(frame: pd.DataFrame, span_s: float | Coverage) -> float:
    """Messages per second in ``frame``: over ``span_s`` seconds, or per endpoint over its
    own span (a :class:`~dashboard.data.Coverage`), summed."""
    if isinstance(span_s, Coverage):
        counts = frame.groupby("endpoint").size()
        return span_s.rate({str(k): float(v) for k, v in counts.items()})
    return len(frame) / max(span_s, 1e-9)
