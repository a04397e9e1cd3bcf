"""Trace context across the wire, both ways: the one place the adapters touch OpenTelemetry.

Outgoing, :func:`outgoing_headers` injects the current W3C trace context (``traceparent``,
``tracestate``, baggage) into a frame's headers while the producer span is current, unless
the tracing middleware already did. Incoming, :func:`attach_trace` makes the producer's
context current around local delivery and :func:`detach_trace` restores the previous one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate

__all__ = ["attach_trace", "current_otel_context", "detach_trace", "outgoing_headers"]


def outgoing_headers(headers: dict[str, str] | None) -> dict[str, str] | None:
    """``headers`` (a message's, possibly ``None``) with the current trace context added
    when there is one to propagate; ``None`` when there is nothing to send."""
    if headers and "traceparent" in headers:
        return headers  # the tracing middleware already put the producer span there
    if not current_otel_context():
        return headers or None  # no span and no baggage: nothing to propagate
    headers = dict(headers) if headers else {}
    propagate.inject(headers)
    return headers or None


def attach_trace(headers: dict[str, str] | None) -> object | None:
    """Make the producer's trace context (``traceparent`` header) current; the token for
    :func:`detach_trace`, or ``None`` when the frame carries none."""
    if not headers or "traceparent" not in headers:
        return None
    return otel_context.attach(propagate.extract(headers))


def detach_trace(token: object | None) -> None:
    if token is not None:
        otel_context.detach(token)  # type: ignore[arg-type]


def _otel_context_getter() -> Callable[[], Any]:
    """``opentelemetry.context.get_current``, or the ``ContextVar.get`` it ends in when the
    runtime context is the default contextvars one (two Python calls less per message)."""
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    get = getattr(var, "get", None)
    if type(runtime).__name__ == "ContextVarsRuntimeContext" and callable(get):
        return get  # type: ignore[no-any-return]
    return otel_context.get_current


#: The current OpenTelemetry context (empty, so falsy, when no span or baggage is set).
current_otel_context = _otel_context_getter()
