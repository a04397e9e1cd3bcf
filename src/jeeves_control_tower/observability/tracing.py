"""TracingMiddleware: one span per publish/send/query and one child span per handler run.

Span names follow ``"{operation} {destination}"``: ``publish MemoryStored``, ``send X``,
``query Y`` (PRODUCER, operation type ``send``), and per handler ``process <type>``
(CONSUMER, ``process``) whose parent is the producer span (messaging conventions of
:data:`.semconv.SCHEMA_URL`).

With a transport: on the way out (``ctx.direction == "out"``) the producer span's context
is injected into ``ctx.headers`` with the global propagator (W3C ``traceparent`` and
``tracestate`` by default); on the way in (``"in"``) the span is ``receive <type>``
(CLIENT, ``receive``) with the context extracted from ``ctx.headers`` as its parent, so
the producer's sampling decision and tracestate hold, and the handler spans are its
children: one trace spans processes. The producer span is made current for the duration
of the message (attached in ``before``, detached in ``after``; the bus runs both in the
caller's context), so a handler that publishes or queries continues the same trace. Each
handler span is current only inside its handler (attached in ``handler_start``, which the
bus runs in the handler's own context copy).

Cheap when nothing is sampled: attribute work is done only for recording spans, span names
and attribute dicts are built once per ``(pattern, type[, handler])`` (bounded cache),
and a no-op tracer (no SDK configured) costs no span and no context switch (see
:class:`._noop.NoopWatch`: public API only; a global provider set later is picked up within
a second). A span that does not record is made current only when it carries a decision
(``get_span_context()`` valid and not the current one). Payloads are recorded only with
``record_payloads=True``. Never raises: failures go to ``on_error``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    Span,
    SpanKind,
    Status,
    StatusCode,
    TracerProvider,
)

from .. import __version__
from ..instrumentation import propagation as propagate  # the one place it happens
from ..ipc import MiddlewareContext
from ._context import current_span
from ._guard import ErrorReporter
from ._noop import LocalGate, NoopWatch
from .batch_receive import BatchReceive
from .semconv import (
    CODE_FUNCTION_NAME,
    ERROR_TYPE,
    MESSAGE_OUTCOME,
    MESSAGE_PAYLOAD,
    MESSAGING_BATCH_MESSAGE_COUNT,
    MESSAGING_CONSUMER_GROUP_NAME,
    MESSAGING_DESTINATION_NAME,
    MESSAGING_MESSAGE_ID,
    MESSAGING_OPERATION_NAME,
    MESSAGING_OPERATION_TYPE,
    MESSAGING_SYSTEM,
    OP_PROCESS,
    OP_RECEIVE,
    OP_SEND,
    SCHEMA_URL,
    SERVER_ADDRESS,
    SERVER_PORT,
    qualified_error_type,
)

__all__ = [
    "BatchReceive",
    "TracingMiddleware",
    "get_tracer",
    "payload_repr",
    "set_error",
    "trace_carrier",
]

OnError = Callable[[str, str, BaseException], None]
Spec = tuple[str, SpanKind, dict[str, Any]]

_KEY = "jeeves.otel"
_CACHE_LIMIT = 4096
_PAYLOAD_LIMIT = 1000
# Messaging conventions (SCHEMA_URL): a ``send`` span whose context is the creation
# context of the message is PRODUCER, a ``receive`` span CLIENT, a ``process`` span
# CONSUMER, whatever the pattern (a query is a message with a reply, not an RPC).
_SEND_KIND, _RECEIVE_KIND, _PROCESS_KIND = SpanKind.PRODUCER, SpanKind.CLIENT, SpanKind.CONSUMER
# The context of the no-op tracer's span when nothing is current (perf: an identity check).
_INVALID = trace.INVALID_SPAN_CONTEXT
# The parent of a batch receive span: none (a batch has no one parent; it links them).
_EMPTY = otel_context.Context()


def _current_span_context() -> trace.SpanContext:
    return current_span().get_span_context()


def get_tracer(tracer_provider: TracerProvider | None = None) -> trace.Tracer:
    """This package's tracer from ``tracer_provider`` (default: the global provider,
    resolved lazily, so a provider installed later is picked up)."""
    return trace.get_tracer(
        "jeeves_control_tower", __version__, tracer_provider, schema_url=SCHEMA_URL
    )


def trace_carrier() -> dict[str, str]:
    """The current trace context as W3C headers (``traceparent``, ``tracestate``, baggage;
    the configured global propagator's), for ``RequestContext(trace_carrier=...)``: a
    dispatch of that envelope continues the caller's trace and sampling decision."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def set_error(span: Span, exc: BaseException) -> None:
    """Mark a recording span failed: ``error.type``, the exception event, status ERROR."""
    span.set_attribute(ERROR_TYPE, qualified_error_type(exc))
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def payload_repr(message: Any) -> str:
    """``repr(message)`` cut to 1000 characters; never raises."""
    try:
        text = repr(message)
    except Exception:
        return f"<unrepresentable {type(message).__name__}>"
    return text if len(text) <= _PAYLOAD_LIMIT else text[:_PAYLOAD_LIMIT] + "..."


class TracingMiddleware:
    """Bus middleware emitting messaging spans. Add it first (outermost) so its span is
    current while the other middleware and the handlers run. Event-loop-thread only, like
    the bus."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        record_payloads: bool = False,
        on_error: OnError | None = None,
        broker: Callable[[], Any] | None = None,
        refresh: Callable[[], None] | None = None,
        watched: Callable[[], bool] | None = None,
    ) -> None:
        self._tracer = get_tracer(tracer_provider)
        self._noop = NoopWatch(tracer_provider)
        self._sdk = self._noop.settled  # a real SDK for good: no look per message (perf)
        # Given the bus's refresh_routes, local messages skip this middleware while the
        # tracer is a no-op (see LocalGate), while ``watched()`` says the bus's probe calls
        # look() to end that.
        self._gate = LocalGate(self._noop, refresh, watched=watched)
        self.look = self._gate.look
        # The bus's transport, read for each message crossing the wire: its
        # ``broker_settings(pattern, type)`` (a settings provider; see BrokerSettings in
        # ipc.adapters) labels broker spans; the cached specs are dropped when it changes.
        self._broker = broker
        self._transport: Any = None
        self._record_payloads = record_payloads
        self._on_error = on_error or ErrorReporter()
        self._producers: dict[tuple[str, str, bool, str], Spec] = {}
        self._consumers: dict[tuple[str, str, str, str], Spec] = {}
        # ctx.hooks without this middleware, for the last hooks tuple seen (the bus hands
        # every message of a chain the same tuple), so dropping out costs no new tuple.
        self._hooks_seen: tuple[Any, ...] | None = None
        self._hooks_left: tuple[Any, ...] = ()

    def applies_to(self, pattern: str, direction: str) -> bool:
        """Every message but, while the gate is shut, local ones (see :class:`.LocalGate`)."""
        return self._gate.applies(direction)

    def _leave_hooks(self, ctx: MiddlewareContext) -> None:
        hooks = ctx.hooks
        if hooks is not self._hooks_seen:
            self._hooks_left = tuple(h for h in hooks if h is not self)
            self._hooks_seen = hooks
        ctx.hooks = self._hooks_left

    # ------------------------------------------------------------------ producer span

    def before(self, ctx: MiddlewareContext, message: Any) -> Any:
        try:  # the whole start written out in one frame (perf: once per message)
            direction = ctx.direction
            remote = None
            if direction == "in" and ctx.headers:
                remote = propagate.extract(ctx.headers)  # the producer's context, off the wire
            if remote is None and not self._sdk and self._is_noop(ctx):
                return message
            if direction != "local" and self._broker is not None:
                self._check_transport()
            key = (ctx.pattern, ctx.message_type, direction == "in", ctx.system)
            spec = self._producers.get(key)
            if spec is None:
                spec = self._producer_spec(key, direction != "local")
            span = self._tracer.start_span(spec[0], remote, spec[1], spec[2])
            if span.is_recording():
                message_id = ctx._message_id
                if message_id is None:
                    message_id = ctx.message_id
                span.set_attribute(MESSAGING_MESSAGE_ID, message_id)
                if self._record_payloads:
                    span.set_attribute(MESSAGE_PAYLOAD, payload_repr(message))
                parent = trace.set_span_in_context(span, remote)
                entry = (span, otel_context.attach(parent), parent, message_id)
                metadata = ctx._metadata  # (perf: not through the property)
                if metadata is None:
                    ctx._metadata = {_KEY: entry}
                else:
                    metadata[_KEY] = entry
            else:
                self._not_recording(ctx, span, remote)
            if direction == "out":  # a transport carries it: put our context on the wire
                if ctx.headers is None:
                    ctx.headers = {}
                propagate.inject(ctx.headers)
        except Exception as exc:
            self._on_error("tracing", "before", exc)
        return message

    def _is_noop(self, ctx: MiddlewareContext) -> bool:
        """No SDK: no span to start, switch or end, no handler spans; the current context
        still goes on the wire."""
        if not self._noop.is_noop(ctx.started):
            self._sdk = self._noop.settled
            return False
        self._leave_hooks(ctx)
        if ctx.direction == "out":
            if ctx.headers is None:
                ctx.headers = {}
            propagate.inject(ctx.headers)
        return True

    def _not_recording(self, ctx: MiddlewareContext, span: Span, remote: Any) -> None:
        """A span that does not record: no handler spans; current only if it carries a decision."""
        self._leave_hooks(ctx)
        context = span.get_span_context()
        # Sampled out: still made current, so nested messages inherit the decision; not when
        # the tracer handed back the current span's context (the no-op tracer, or an SDK
        # tracer disabled by its provider: no decision of its own, nothing to switch; its
        # copy made current would hide the caller's recording span from the handlers).
        if context is not _INVALID and (remote is not None or context != _current_span_context()):
            parent = trace.set_span_in_context(span, remote)
            ctx.metadata[_KEY] = (span, otel_context.attach(parent), None, None)

    def after(
        self, ctx: MiddlewareContext, message: Any, result: Any, error: BaseException | None
    ) -> Any:
        try:
            metadata = ctx._metadata  # read only if someone made it (the property makes it)
            entry = metadata.pop(_KEY, None) if metadata else None
            if entry is not None:  # the end written out here (perf: once per message)
                span = entry[0]
                otel_context.detach(entry[1])
                if entry[2] is not None:  # recording: its trace id for the probe (told next)
                    ctx.trace_id = span.get_span_context().trace_id
                    if error is not None or ctx.outcome != "ok":
                        self._failed(ctx, span, error)
                span.end()
        except Exception as exc:
            self._on_error("tracing", "after", exc)
        return result

    @staticmethod
    def _failed(ctx: MiddlewareContext, span: Span, error: BaseException | None) -> None:
        outcome = ctx.outcome
        if outcome != "ok":
            span.set_attribute(MESSAGE_OUTCOME, outcome)
        if error is not None:
            set_error(span, error)
        elif ctx.pattern == "query":
            # An aborted query raises QueryAbortedError to its caller after this hook.
            span.set_attribute(ERROR_TYPE, outcome)
            span.set_status(Status(StatusCode.ERROR, f"query {outcome}"))

    # ------------------------------------------------------------------ handler spans

    def handler_start(self, ctx: MiddlewareContext, handler_name: str) -> Any:
        try:
            metadata = ctx._metadata  # (perf: not through the property)
            entry = metadata.get(_KEY) if metadata else None
            if entry is None or entry[2] is None:
                return None  # not recording: the handler inherits the producer's context
            _, _, parent, message_id = entry
            key = (ctx.pattern, ctx.message_type, handler_name, ctx.system)
            spec = self._consumers.get(key)
            if spec is None:
                spec = self._consumer_spec(key, ctx.direction == "in")
            name, kind, base = spec
            attributes = dict(base)
            attributes[MESSAGING_MESSAGE_ID] = message_id
            span = self._tracer.start_span(name, parent, kind, attributes)
            otel_context.attach(trace.set_span_in_context(span))  # this handler's copy only
            return span
        except Exception as exc:
            self._on_error("tracing", "handler_start", exc)
            return None

    def handler_end(self, ctx: MiddlewareContext, token: Any, error: BaseException | None) -> None:
        if token is None:
            return
        try:
            if error is not None and token.is_recording():
                set_error(token, error)
            token.end()
        except Exception as exc:
            self._on_error("tracing", "handler_end", exc)

    # ------------------------------------------------------------------ batch receive

    def receive_batch(self, settings: Any, count: int) -> BatchReceive | None:
        """A ``receive <destination>`` span (CLIENT, ``receive``) for ``count`` messages a
        transport read at once from the destination ``settings`` (a ``BrokerSettings``)
        names: a root the configured sampler decides (a batch has no one parent), with
        ``messaging.batch.message_count`` and, added by :meth:`BatchReceive.link`, a link
        to each message's producer context. ``None`` when it would not record."""
        try:
            if self._noop.is_noop(time.perf_counter()):
                return None
            attributes: dict[str, Any] = {
                MESSAGING_SYSTEM: settings.system,
                MESSAGING_OPERATION_TYPE: OP_RECEIVE,
                MESSAGING_OPERATION_NAME: "receive",
                MESSAGING_DESTINATION_NAME: settings.destination,
                MESSAGING_BATCH_MESSAGE_COUNT: count,
            }
            if settings.server_address:
                attributes[SERVER_ADDRESS] = settings.server_address
                if settings.server_port is not None:
                    attributes[SERVER_PORT] = settings.server_port
            if settings.consumer_group:
                attributes[MESSAGING_CONSUMER_GROUP_NAME] = settings.consumer_group
            span = self._tracer.start_span(
                f"receive {settings.destination}", _EMPTY, _RECEIVE_KIND, attributes
            )
            if not span.is_recording():
                span.end()
                return None
            return BatchReceive(span, self._on_error)
        except Exception as exc:
            self._on_error("tracing", "receive_batch", exc)
            return None

    # ------------------------------------------------------------------ cached specs

    def _check_transport(self) -> None:
        """Drop the cached specs when the bus's transport is not the one they were made for."""
        assert self._broker is not None
        transport = self._broker()
        if transport is not self._transport:
            self._transport = transport
            self._producers.clear()
            self._consumers.clear()

    def _broker_attributes(
        self, pattern: str, message_type: str, attributes: dict[str, Any], inbound: bool
    ) -> None:
        """Add what the transport's settings provider says about the broker: the real
        destination, ``server.address``/``server.port`` and, coming in, the consumer group."""
        provider = getattr(self._transport, "broker_settings", None)
        if provider is None:
            return
        settings = provider(pattern, message_type)
        attributes[MESSAGING_DESTINATION_NAME] = settings.destination
        if settings.server_address:
            attributes[SERVER_ADDRESS] = settings.server_address
            if settings.server_port is not None:
                attributes[SERVER_PORT] = settings.server_port
        if inbound and settings.consumer_group:
            attributes[MESSAGING_CONSUMER_GROUP_NAME] = settings.consumer_group

    def _producer_spec(self, key: tuple[str, str, bool, str], broker: bool) -> Spec:
        pattern, message_type, inbound, system = key
        operation = "receive" if inbound else pattern
        spec: Spec = (
            f"{operation} {message_type}",
            _RECEIVE_KIND if inbound else _SEND_KIND,
            {
                MESSAGING_SYSTEM: system,
                MESSAGING_OPERATION_TYPE: OP_RECEIVE if inbound else OP_SEND,
                MESSAGING_OPERATION_NAME: operation,
                MESSAGING_DESTINATION_NAME: message_type,
            },
        )
        if broker:
            self._broker_attributes(pattern, message_type, spec[2], inbound)
        if len(self._producers) < _CACHE_LIMIT:
            self._producers[key] = spec
        return spec

    def _consumer_spec(self, key: tuple[str, str, str, str], inbound: bool) -> Spec:
        pattern, message_type, handler, system = key
        spec: Spec = (
            f"process {message_type}",
            _PROCESS_KIND,
            {
                MESSAGING_SYSTEM: system,
                MESSAGING_OPERATION_TYPE: OP_PROCESS,
                MESSAGING_OPERATION_NAME: "process",
                MESSAGING_DESTINATION_NAME: message_type,
                CODE_FUNCTION_NAME: handler,
            },
        )
        if inbound:
            self._broker_attributes(pattern, message_type, spec[2], True)
        if len(self._consumers) < _CACHE_LIMIT:
            self._consumers[key] = spec
        return spec
