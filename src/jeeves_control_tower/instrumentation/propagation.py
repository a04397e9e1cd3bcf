"""Trace-context propagation: the one place the package injects and extracts it.

Everything goes through OpenTelemetry's own configured text-map propagator
(:mod:`opentelemetry.propagate`: W3C ``traceparent``/``tracestate`` and baggage by default,
whatever ``OTEL_PROPAGATORS`` or ``set_global_textmap`` chose). The transports never
propagate: they move headers between the wire and the bus (``ctx.headers``,
``deliver_incoming(headers=...)``) and hand the headers of their own traffic to the bus's
telemetry handle. Who uses this module:

- the tracing middleware (:mod:`jeeves_control_tower.observability.tracing`) injects the
  producer span's context on the way out and extracts the producer's on the way in;
- :class:`PropagationMiddleware` does only that, for a bus instrumented with
  ``tracing=False`` (trace context still flows through the process);
- the dispatch tracer extracts ``RequestContext.trace_carrier``; :func:`carrier` makes one;
- a bus's telemetry handle injects into, and attaches from, the headers of the transports'
  own traffic (heartbeats, remote dispatch), which bypasses the middleware chain.

:func:`inject` and :func:`extract` *are* ``opentelemetry.propagate.inject`` / ``extract``
(no wrapper on the per-message path).
"""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate

__all__ = [
    "PropagationMiddleware",
    "attach",
    "carrier",
    "detach",
    "extract",
    "inject",
    "inject_into",
]

#: ``inject(carrier, context=None)``: the current (or given) context into ``carrier``.
inject = propagate.inject
#: ``extract(carrier, context=None) -> Context``: the context ``carrier`` holds.
extract = propagate.extract

_KEY = "jeeves.propagation"


def carrier() -> dict[str, str]:
    """The current trace context as propagator headers (for
    ``RequestContext(trace_carrier=...)``); empty when there is nothing to propagate."""
    headers: dict[str, str] = {}
    inject(headers)
    return headers


def inject_into(headers: dict[str, str] | None) -> dict[str, str] | None:
    """``headers`` (possibly ``None``) with the current trace context added: a new dict
    when something was added, ``headers`` itself otherwise (``None`` stays ``None`` when
    there is nothing to propagate)."""
    added: dict[str, str] = {}
    inject(added)
    if not added:
        return headers
    return {**headers, **added} if headers else added


def attach(headers: dict[str, str] | None) -> object | None:
    """Make the context ``headers`` carry current; the token for :func:`detach`, or
    ``None`` when they carry none (nothing was attached)."""
    if not headers:
        return None
    context = extract(headers)
    if not context:
        return None
    return otel_context.attach(context)


def detach(token: object | None) -> None:
    """Restore the context :func:`attach` replaced (nothing for ``None``)."""
    if token is not None:
        otel_context.detach(token)  # type: ignore[arg-type]


class PropagationMiddleware:
    """Bus middleware carrying the trace context across a transport without making spans:
    on the way out the current context goes into ``ctx.headers``, on the way in the
    producer's is current while the message is handled. It applies to no message that
    stays in the process (``applies_to``), so it costs those nothing. Event-loop-thread
    only, like the bus; never raises (a failure is passed to ``on_error``)."""

    def __init__(self, on_error: Any = None) -> None:
        self._on_error = on_error

    def applies_to(self, pattern: str, direction: str) -> bool:
        return direction != "local"

    def before(self, ctx: Any, message: Any) -> Any:
        try:
            if ctx.direction == "out":
                ctx.headers = inject_into(ctx.headers)
            else:
                token = attach(ctx.headers)
                if token is not None:
                    ctx.metadata[_KEY] = token
        except Exception as exc:
            self._failed("before", exc)
        return message

    def after(self, ctx: Any, message: Any, result: Any, error: BaseException | None) -> Any:
        try:
            if ctx.direction == "in":
                detach(ctx.metadata.pop(_KEY, None))
        except Exception as exc:
            self._failed("after", exc)
        return result

    def _failed(self, where: str, exc: BaseException) -> None:
        if self._on_error is not None:
            self._on_error("propagation", where, exc)
