"""How the flow recorder shows a record (``/api/flow``), a service (``/api/services``) and
its totals (``/api/stats``)."""

from __future__ import annotations

from typing import Any

__all__ = ["BUS_PATTERNS", "record_dict", "service_row", "stats_body"]

#: The patterns of bus messages (a record of any other pattern is a dispatch).
BUS_PATTERNS = ("publish", "send", "query")


def service_row(descriptor: Any, queue_depth: int, stats: list[float]) -> dict[str, Any]:
    """The row of ``descriptor`` (read live: single attribute reads, atomic under the GIL)
    with its last queue depth and its dispatch counts ``[requests, errors, timeouts,
    retries, seconds]`` (empty: none yet)."""
    requests, errors, timeouts, retries, seconds = stats or (0, 0, 0, 0, 0.0)
    d = descriptor
    try:
        metadata = dict(d.metadata)
    except Exception:
        metadata = {}
    return {
        "name": d.name,
        "service_type": d.service_type,
        "version": d.version,
        "capabilities": list(d.capabilities),
        "healthy": bool(d.healthy),
        "current_load": d.current_load,
        "max_concurrent": d.max_concurrent,
        "queue_depth": queue_depth,
        "requests": int(requests),
        "errors": int(errors),
        "timeouts": int(timeouts),
        "retries": int(retries),
        "avg_latency_ms": round(seconds / requests * 1000.0, 3) if requests else 0.0,
        "metadata": metadata,
    }


def record_dict(seq: int, raw: tuple[Any, ...], offset: float, payloads: bool) -> dict[str, Any]:
    """Record ``seq`` (a :data:`~.flow.Raw`) as the feed shows it (``offset``: wall clock
    minus perf clock; ``payloads``: with its ``payload``)."""
    started, pattern, mtype, handlers, seconds, outcome, etype, trace_id, payload = raw[:9]
    out: dict[str, Any] = {
        "seq": seq,
        "time": round(started + offset, 6),
        "pattern": pattern,
        "message_type": mtype,
        "targets": [h if h.__class__ is str else h.name for h in handlers],
        "duration_ms": round(seconds * 1000.0, 3),
        "outcome": outcome,
        "error_type": etype,
        "trace_id": format(trace_id, "032x") if trace_id else None,
    }
    if payloads:
        out["payload"] = payload
    return out


def stats_body(
    uptime: float,
    counts: list[tuple[tuple[str, str], int]],
    inflight: dict[str, int],
    descriptors: list[Any],
    last_seq: int,
    capacity: int,
) -> dict[str, Any]:
    """The ``/api/stats`` body: records by ``(pattern, outcome)`` (a pattern not on the bus
    counts as dispatch), in-flight counts, the services (descriptors read live), the ring."""
    messages: dict[str, dict[str, int]] = {p: {} for p in BUS_PATTERNS}
    dispatch: dict[str, int] = {}
    for (pattern, outcome), n in counts:
        messages.get(pattern, dispatch)[outcome] = n
    return {
        "uptime_seconds": round(uptime, 3),
        "messages": messages,
        "dispatch": dispatch,
        "inflight": inflight,
        "services": {
            "registered": len(descriptors),
            "healthy": sum(1 for d in descriptors if d.healthy),
        },
        "flow": {"last_seq": last_seq, "capacity": capacity},
    }
