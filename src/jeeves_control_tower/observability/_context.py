"""The trace id of the span current in this context, for exemplars and flow records."""

from __future__ import annotations

from typing import Any

from opentelemetry.context import get_current
from opentelemetry.trace import get_current_span

__all__ = ["exemplar", "message_trace_id", "recording_trace_id"]


def recording_trace_id() -> int:
    """The trace id of the current span if it is recording (sampled), else ``0``."""
    current = get_current()
    if not current:  # perf: an empty context (a mapping) holds no span at all
        return 0
    span = get_current_span(current)
    if span.is_recording():
        return span.get_span_context().trace_id
    return 0


def message_trace_id(ctx: Any) -> int:
    """:func:`recording_trace_id` for a bus message's ``after`` hooks, looked up once per
    message and kept in ``ctx.trace_id`` so the metrics and flow hooks share one lookup
    (they run back to back in the same context, so they would see the same span)."""
    trace_id: int | None = ctx.trace_id
    if trace_id is None:
        trace_id = ctx.trace_id = recording_trace_id()
    return trace_id


def exemplar(trace_id: int) -> dict[str, str] | None:
    """A Prometheus exemplar label set for ``trace_id`` (``None`` for ``0``)."""
    return {"trace_id": format(trace_id, "032x")} if trace_id else None
