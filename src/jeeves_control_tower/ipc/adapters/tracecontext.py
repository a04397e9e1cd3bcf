"""Trace context across the wire, both ways: the one place the adapters touch OpenTelemetry.

Outgoing, :func:`outgoing_headers` injects the current W3C trace context (``traceparent``,
``tracestate``, baggage) into a frame's headers while the producer span is current, unless
the tracing middleware already did. Incoming, :func:`attach_trace` makes the producer's
context current around local delivery and :func:`detach_trace` restores the previous one.
Messages read in one batch: :func:`begin_batch` hands their count and the transport's
``BrokerSettings`` to the bus's telemetry (``bus.telemetry.receive_batch``, when there is
one), :func:`link_batch` passes each message's headers on while the batch is handled and
:func:`end_batch` closes it; the telemetry makes the span and its links.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any, cast

from opentelemetry import context as otel_context
from opentelemetry import propagate

__all__ = [
    "attach_trace",
    "begin_batch",
    "current_otel_context",
    "detach_trace",
    "end_batch",
    "link_batch",
    "outgoing_headers",
]

#: The telemetry record of the batch being handled in this task (None: none).
_batch: ContextVar[Any] = ContextVar("jeeves_batch_receive", default=None)


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


def begin_batch(bus: Any, settings: Any, count: int) -> object | None:
    """Tell the bus's telemetry that ``count`` messages were read at once from the
    destination ``settings`` names; the token for :func:`end_batch` (``None`` when there is
    nothing to record: one message, no telemetry, or not sampled)."""
    if count < 2:
        return None
    hook = getattr(getattr(bus, "telemetry", None), "receive_batch", None)
    record = hook(settings, count) if hook is not None else None
    return None if record is None else (record, _batch.set(record))


def link_batch(headers: dict[str, str] | None) -> None:
    """Pass one message's headers to the batch being handled in this task, if any."""
    if headers:
        record = _batch.get()
        if record is not None:
            record.link(headers)


def end_batch(token: object | None) -> None:
    if token is not None:
        record, reset = cast("tuple[Any, Token[Any]]", token)
        _batch.reset(reset)
        record.end()


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
