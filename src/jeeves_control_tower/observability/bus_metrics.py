"""MetricsMiddleware: the bus's Prometheus metrics (messages, latency, errors, timeouts,
in-flight).

Sync hooks only (the bus's fast path). Per message: one in-flight ``inc``/``dec``, one
counter ``inc`` and one histogram ``observe`` on children bound once per
``(pattern, message_type, outcome)``; the observation carries the current trace id as an
exemplar when a span is recording. The children of a ``(pattern, message_type)`` are found
with one dict lookup (a bounded cache keyed by the raw type, in front of the label limiter).
Never raises: failures go to ``on_error``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from ..ipc import MiddlewareContext
from ._context import message_trace_id
from ._guard import ErrorReporter
from .metrics import BusSeries, CommBusMetrics, get_metrics
from .otel_metrics import OtelMetrics, outcome_error
from .semconv import error_type

__all__ = ["MetricsMiddleware"]

OnError = Callable[[str, str, BaseException], None]
_perf = time.perf_counter
#: Most raw ``(pattern, message_type)`` keys cached per middleware; past it, the (bounded,
#: folding) lookup in :class:`CommBusMetrics` is used for the new ones.
_CACHE_LIMIT = 4096


class MetricsMiddleware:
    """Bus middleware recording the ``commbus_messages_*`` / ``commbus_handler_errors_total``
    / ``commbus_timeouts_total{pattern="query"}`` / ``commbus_inflight_messages`` metrics.

    Add it after (inside) the tracing middleware so its exemplars see the message's span.
    ``commbus_handler_errors_total`` counts each failing handler run once (every failing
    subscriber of a publish); timeouts and errors raised by middleware are not handler
    errors. Thread-safe (a registry may be shared across event loops).
    """

    def __init__(
        self,
        metrics: CommBusMetrics | None = None,
        *,
        registry: CollectorRegistry | None = None,
        on_error: OnError | None = None,
        otel: OtelMetrics | None = None,
    ) -> None:
        self.metrics = metrics if metrics is not None else get_metrics(registry)
        self._on_error = on_error or ErrorReporter(counter=self.metrics.telemetry_errors)
        self.otel = otel
        self._inflight: dict[str, Any] = {}  # pattern -> bound in-flight gauge child
        self._series: dict[tuple[str, str], tuple[BusSeries, Any]] = {}  # raw key -> children

    def _inflight_child(self, pattern: str) -> Any:
        child = self._inflight[pattern] = self.metrics.inflight_for(pattern)
        return child

    def _bind(self, key: tuple[str, str]) -> BusSeries:
        """First message of ``key``: the in-flight ``dec`` and the lookups, in the order of
        the uncached path, then the children are cached for the next messages."""
        metrics = self.metrics
        inflight = metrics.inflight_for(key[0])
        inflight.dec()
        series = metrics.bus_series(*key)
        if len(self._series) < _CACHE_LIMIT:
            self._series[key] = (series, inflight)
        return series

    def before(self, ctx: MiddlewareContext, message: Any) -> Any:
        try:
            pattern = ctx.pattern
            child = self._inflight.get(pattern)
            if child is None:
                child = self._inflight_child(pattern)
            child.inc()
        except Exception as exc:
            self._on_error("metrics", "before", exc)
        return message

    def after(
        self, ctx: MiddlewareContext, message: Any, result: Any, error: BaseException | None
    ) -> Any:
        try:
            elapsed = _perf() - ctx.started
            series = self._record(ctx, error, elapsed)
        except Exception as exc:
            self._on_error("metrics", "after", exc)
            return result
        otel = self.otel
        if otel is not None:
            try:
                if otel.live or (ctx.started >= otel.next_look and otel.look(ctx.started)):
                    self._record_otel(otel, ctx, error, elapsed, series.message_type)
            except Exception as exc:
                self._on_error("otel_metrics", "after", exc)
        return result

    def _record_otel(
        self,
        otel: OtelMetrics,
        ctx: MiddlewareContext,
        error: BaseException | None,
        elapsed: float,
        destination: str,
    ) -> None:
        """The OpenTelemetry side: a message produced here is sent (direction local/out);
        one delivered to local handlers (local/in) is consumed and processed."""
        etype = outcome_error(ctx.outcome, error, self.metrics.error_types)
        direction = ctx.direction
        if direction != "in":
            otel.sent(ctx.system, ctx.pattern, destination, etype, elapsed)
        if direction != "out" and ctx.handlers:
            otel.consumed(ctx.system, destination, etype, elapsed)

    def _record(
        self, ctx: MiddlewareContext, error: BaseException | None, elapsed: float
    ) -> BusSeries:
        pattern = ctx.pattern
        key = (pattern, ctx.message_type)
        bundle = self._series.get(key)
        if bundle is None:
            series = self._bind(key)
        else:
            series = bundle[0]
            bundle[1].dec()
        outcome = ctx.outcome
        counter = series.outcomes.get(outcome)
        if counter is None:
            counter = series.outcomes[outcome] = self.metrics.messages_total.labels(
                pattern, series.message_type, outcome
            )
        counter.inc()
        trace_id = message_trace_id(ctx)
        if trace_id:
            series.duration.observe(elapsed, {"trace_id": format(trace_id, "032x")})
        else:
            series.duration.observe(elapsed)
        if outcome == "timeout":
            if series.timeouts is not None:
                series.timeouts.inc()
        elif outcome == "error" and error is not None and ctx.handlers:
            metrics = self.metrics
            errors = (
                error.exceptions
                if pattern == "publish" and isinstance(error, BaseExceptionGroup)
                else (error,)
            )
            for exc in errors:
                label = metrics.error_types(error_type(exc))
                child = series.errors.get(label)
                if child is None:
                    child = series.errors[label] = metrics.handler_errors.labels(
                        pattern, series.message_type, label
                    )
                child.inc()
        return series
