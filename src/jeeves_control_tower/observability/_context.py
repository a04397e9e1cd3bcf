"""The trace id of the span current in this context, for exemplars and flow records."""

from __future__ import annotations

from opentelemetry.trace import get_current_span

__all__ = ["exemplar", "recording_trace_id"]


def recording_trace_id() -> int:
    """The trace id of the current span if it is recording (sampled), else ``0``."""
    span = get_current_span()
    if span.is_recording():
        return span.get_span_context().trace_id
    return 0


def exemplar(trace_id: int) -> dict[str, str] | None:
    """A Prometheus exemplar label set for ``trace_id`` (``None`` for ``0``)."""
    return {"trace_id": format(trace_id, "032x")} if trace_id else None
