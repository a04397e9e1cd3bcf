"""The span current in a context (:func:`current_span`, the API's ``get_current_span`` at
less than half its cost), and its trace id for exemplars and flow records."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context, get_current, set_value
from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan, Span, SpanContext, get_current_span

__all__ = ["current_span", "exemplar", "message_trace_id", "recording_trace_id"]


def _span_key() -> str | None:
    """The key the API keeps the current span under in a context, found with public API
    only: the one key ``set_span_in_context`` puts in an empty :class:`Context` (a
    mapping), kept only if a round trip shows the API's ``get_current_span`` reads just
    that (a span stored as it is under that key; anything else there is no span). ``None``
    for an API shaped otherwise: then :func:`current_span` is the API's own function."""
    try:
        probe = NonRecordingSpan(SpanContext(1, 1, False))
        stored = trace.set_span_in_context(probe, Context())
        keys = list(stored)
        if len(keys) != 1 or not isinstance(keys[0], str):
            return None
        key = keys[0]
        other = set_value(key, object(), Context())
        if (
            stored.get(key) is not probe
            or get_current_span(stored) is not probe
            or get_current_span(other) is not INVALID_SPAN
            or get_current_span(Context()) is not INVALID_SPAN
        ):
            return None
        return key
    except Exception:
        return None


_SPAN_KEY = _span_key()
#: Classes of the values under the key found to be spans (an ABC ``isinstance`` is the
#: costly part of the API's lookup; a process has a handful of span classes).
_SPAN_CLASSES: set[type] = set()


def current_span(context: Context | None = None) -> Span:
    """What ``opentelemetry.trace.get_current_span(context)`` returns: the span in
    ``context`` (default: the current one), ``INVALID_SPAN`` when there is none or the value
    there is not a :class:`Span`. Perf: every traced message and dispatch looks once or
    twice."""
    key = _SPAN_KEY
    if key is None:
        return get_current_span(context)
    span = (get_current() if context is None else context).get(key)
    if span is None:
        return INVALID_SPAN
    cls = type(span)  # (not __class__, which a proxy may report otherwise)
    if cls in _SPAN_CLASSES:
        return span  # type: ignore[return-value]  # (a subclass of Span)
    if isinstance(span, Span):
        if issubclass(cls, Span) and len(_SPAN_CLASSES) < 64:
            _SPAN_CLASSES.add(cls)  # its every instance is a Span (a proxy's type is not)
        return span
    return INVALID_SPAN


def recording_trace_id() -> int:
    """The trace id of the current span if it is recording (sampled), else ``0``."""
    current = get_current()
    if not current:  # perf: an empty context (a mapping) holds no span at all
        return 0
    span = current_span(current)
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
