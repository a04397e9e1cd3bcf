"""DispatchTracer: a ``dispatch {service}`` span (PRODUCER, operation type ``send``) per
dispatch and a ``process {service}`` child span (CONSUMER, ``process``) per attempt, so
retries show as siblings (messaging conventions, see :data:`.semconv.SCHEMA_URL`).

The dispatch span carries the service, method, priority, attempt count and outcome; a
non-``ok`` outcome is an error (``error.type`` is ``timeout`` for a timeout, the exception
class for a handler error, else the outcome itself: ``overloaded``, ``unknown_service``,
``unhealthy``, ``no_handler``, ``cancelled``). The dispatch span is current for the whole
dispatch and each attempt span inside its attempt (the coordinator runs ``attempt_start``
in the attempt's own context copy), so the handler continues the trace. With no current
span, the caller's context in the envelope's ``RequestContext.trace_carrier`` (W3C headers,
extracted with the configured propagator) is the parent, so the caller's sampling decision
and tracestate hold; without one, a ``trace_id``/``span_id`` pair (hex, no sampling
decision) is only linked from a root span the configured sampler decides. Never raises:
failures go to ``on_error``.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TracerProvider,
)

from ..instrumentation import propagation as propagate  # the one place it happens
from ..types import DispatchTarget, Envelope, RequestContext
from ._context import current_span
from ._guard import ErrorReporter
from ._noop import NoopWatch
from .bus_metrics import OnError
from .semconv import (
    DISPATCH_ATTEMPT,
    DISPATCH_ATTEMPTS,
    DISPATCH_METHOD,
    DISPATCH_OUTCOME,
    DISPATCH_PRIORITY,
    DISPATCH_SERVICE,
    ERROR_TYPE,
    MESSAGING_DESTINATION_NAME,
    MESSAGING_OPERATION_NAME,
    MESSAGING_OPERATION_TYPE,
    MESSAGING_SYSTEM,
    OP_PROCESS,
    OP_SEND,
    SYSTEM,
    TIMEOUT,
)
from .tracing import get_tracer, set_error

__all__ = ["DispatchTracer"]

_CACHE_LIMIT = 4096
_INVALID = trace.INVALID_SPAN_CONTEXT
_PRODUCER, _CONSUMER = SpanKind.PRODUCER, SpanKind.CONSUMER


def _caller_parent(rc: RequestContext) -> Context | None:
    """The caller's context carried by ``rc.trace_carrier``, extracted with the configured
    global propagator (its sampling decision and tracestate intact), or ``None``."""
    carrier = rc.trace_carrier
    if not carrier:
        return None
    context = propagate.extract(carrier)
    return context if current_span(context).get_span_context().is_valid else None


def _caller_link(rc: RequestContext) -> list[Link] | None:
    """A link to the span named by ``rc.trace_id``/``rc.span_id`` (hex), or ``None``.
    Ids alone carry no sampling decision: the span they name is linked, never a parent."""
    trace_hex, span_hex = rc.trace_id, rc.span_id
    if not trace_hex or not span_hex or len(trace_hex) != 32 or len(span_hex) != 16:
        return None
    try:
        linked = SpanContext(int(trace_hex, 16), int(span_hex, 16), True)
    except ValueError:
        return None
    return [Link(linked)] if linked.is_valid else None


class DispatchTracer:
    """A :class:`~jeeves_control_tower.ipc.DispatchObserver` emitting dispatch
    spans. Add it before other observers so they see its span at ``dispatch_start``.
    Event-loop-thread only."""

    def __init__(
        self, tracer_provider: TracerProvider | None = None, *, on_error: OnError | None = None
    ) -> None:
        self._tracer = get_tracer(tracer_provider)
        self._noop = NoopWatch(tracer_provider)
        self._sdk = self._noop.settled  # a real SDK for good: no look per dispatch (perf)
        self._on_error = on_error or ErrorReporter()
        self._specs: dict[tuple[str, str, Any], tuple[str, dict[str, Any]]] = {}
        self._attempts: dict[tuple[str, str, int], tuple[str, dict[str, Any]]] = {}

    def _spec(self, target: DispatchTarget) -> tuple[str, dict[str, Any]]:
        """The span name and attributes of a dispatch to ``target`` (cached, bounded)."""
        key = (target.service_name, target.method, target.priority)
        spec = self._specs.get(key)
        if spec is None:
            attributes = {
                MESSAGING_SYSTEM: SYSTEM,
                MESSAGING_OPERATION_TYPE: OP_SEND,
                MESSAGING_OPERATION_NAME: "dispatch",
                MESSAGING_DESTINATION_NAME: key[0],
                DISPATCH_SERVICE: key[0],
                DISPATCH_METHOD: key[1],
                DISPATCH_PRIORITY: key[2].value,
            }
            spec = (f"dispatch {key[0]}", attributes)
            if len(self._specs) < _CACHE_LIMIT:
                self._specs[key] = spec
        return spec

    def wants_dispatch(self, envelope: Envelope) -> bool:
        """Whether :meth:`dispatch_start` may have something to do: a real SDK, or a
        caller's context in the envelope (with no SDK it goes on, for the handler to pass
        along). Otherwise the coordinator runs the dispatch unobserved (its own
        ``dispatch_start`` would return ``None``)."""
        if self._sdk:
            return True
        rc = envelope.request_context
        return bool(rc.trace_carrier) or not self._is_noop()

    def dispatch_start(self, target: DispatchTarget, envelope: Envelope) -> Any:
        try:
            rc = envelope.request_context
            parent = links = current = None
            if rc.trace_carrier or rc.trace_id:  # a caller's context, unless one is current
                current = current_span().get_span_context()
                if not current.is_valid:
                    parent = _caller_parent(rc)
                    if parent is None and rc.trace_id:
                        links = _caller_link(rc)  # a root span the sampler decides, linked
            if parent is None and not self._sdk and self._is_noop():
                return None  # no SDK: no span to start, switch or end
            name, attributes = self._spec(target)
            span = self._tracer.start_span(name, parent, _PRODUCER, attributes, links)
            recording = span.is_recording()
            if not recording:
                made = span.get_span_context()
                if made is _INVALID or not made.is_valid:
                    return None
                # A tracer with no SDK behind it (or one its provider disabled) hands back
                # the current span's context: no decision to carry, nothing to switch.
                if current is None:
                    current = current_span().get_span_context()
                if made is current:
                    return None
            context = trace.set_span_in_context(span, parent)
            return (span, otel_context.attach(context), recording)
        except Exception as exc:
            self._on_error("tracing", "dispatch_start", exc)
            return None

    def _is_noop(self) -> bool:
        """Whether the spans come from the no-op tracer (no SDK); remembers a real SDK
        seen for good, so that it is not asked again (perf: once per dispatch)."""
        if self._noop.is_noop(time.perf_counter()):
            return True
        self._sdk = self._noop.settled
        return False

    def watches_attempts(self, token: Any) -> bool:
        """Attempt spans only under a recording dispatch span: otherwise the attempts run
        with no attempt hooks (the dispatch's context, if any, is current)."""
        return token is not None and token[2]

    def _attempt_spec(self, target: DispatchTarget, attempt: int) -> tuple[str, dict[str, Any]]:
        """The name and attributes of an attempt span (cached, bounded; the SDK copies the
        attributes into the span, so one dict serves every span)."""
        key = (target.service_name, target.method, attempt)
        spec = self._attempts.get(key)
        if spec is None:
            name = key[0]
            attributes = {
                MESSAGING_SYSTEM: SYSTEM,
                MESSAGING_OPERATION_TYPE: OP_PROCESS,
                MESSAGING_OPERATION_NAME: "process",
                MESSAGING_DESTINATION_NAME: name,
                DISPATCH_SERVICE: name,
                DISPATCH_METHOD: key[1],
                DISPATCH_ATTEMPT: attempt,
            }
            spec = (f"process {name}", attributes)
            if len(self._attempts) < _CACHE_LIMIT:
                self._attempts[key] = spec
        return spec

    def attempt_start(self, token: Any, target: DispatchTarget, attempt: int) -> Any:
        if token is None or not token[2]:
            return None
        try:
            name, attributes = self._attempt_spec(target, attempt)
            # the parent is the dispatch span, current in the copied context
            span = self._tracer.start_span(name, None, _CONSUMER, attributes)
            otel_context.attach(trace.set_span_in_context(span))  # this attempt's copy only
            return span
        except Exception as exc:
            self._on_error("tracing", "attempt_start", exc)
            return None

    def attempt_end(self, token: Any, attempt_token: Any, error: BaseException | None) -> None:
        if attempt_token is None:
            return
        try:
            if error is not None and attempt_token.is_recording():
                set_error(attempt_token, error)
            attempt_token.end()
        except Exception as exc:
            self._on_error("tracing", "attempt_end", exc)

    def dispatch_end(
        self,
        token: Any,
        target: DispatchTarget,
        outcome: str,
        attempts: int,
        error: BaseException | None,
        duration: float,
    ) -> None:
        if token is None:
            return
        try:
            span, context_token, recording = token
            otel_context.detach(context_token)
            if recording:
                span.set_attribute(DISPATCH_ATTEMPTS, attempts)
                span.set_attribute(DISPATCH_OUTCOME, outcome)
                if outcome == "error" and error is not None:
                    set_error(span, error)
                elif outcome != "ok":
                    span.set_attribute(ERROR_TYPE, TIMEOUT if outcome == "timeout" else outcome)
                    span.set_status(Status(StatusCode.ERROR, f"dispatch {outcome}"))
            span.end()
        except Exception as exc:
            self._on_error("tracing", "dispatch_end", exc)

    observes_load = False  # nothing to do when a service's load changes

    def service_changed(self, service: Any, queue_depth: int) -> None:
        return None

    def service_removed(self, service: Any) -> None:
        return None
