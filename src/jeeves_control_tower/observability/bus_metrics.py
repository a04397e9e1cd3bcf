"""MetricsMiddleware: the bus's Prometheus metrics (messages, latency, errors, timeouts,
in-flight).

Sync hooks only (the bus's fast path). Per message: one in-flight ``inc``/``dec``, one
counter ``inc`` and one histogram ``observe`` on children bound once per
``(pattern, message_type, outcome)``; the observation carries the current trace id as an
exemplar when a span is recording. Never raises: failures go to ``on_error``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from ..ipc.middleware import MiddlewareContext
from ._context import recording_trace_id
from ._guard import ErrorReporter
from .metrics import CommBusMetrics, get_metrics
from .semconv import error_type

__all__ = ["MetricsMiddleware"]

OnError = Callable[[str, str, BaseException], None]
_perf = time.perf_counter


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
    ) -> None:
        self.metrics = metrics if metrics is not None else get_metrics(registry)
        self._on_error = on_error or ErrorReporter(counter=self.metrics.telemetry_errors)

    def before(self, ctx: MiddlewareContext, message: Any) -> Any:
        try:
            self.metrics.inflight_for(ctx.pattern).inc()
        except Exception as exc:
            self._on_error("metrics", "before", exc)
        return message

    def after(
        self, ctx: MiddlewareContext, message: Any, result: Any, error: BaseException | None
    ) -> Any:
        try:
            self._record(ctx, error)
        except Exception as exc:
            self._on_error("metrics", "after", exc)
        return result

    def _record(self, ctx: MiddlewareContext, error: BaseException | None) -> None:
        elapsed = _perf() - ctx.started
        metrics = self.metrics
        pattern = ctx.pattern
        metrics.inflight_for(pattern).dec()
        series = metrics.bus_series(pattern, ctx.message_type)
        outcome = ctx.outcome
        counter = series.outcomes.get(outcome)
        if counter is None:
            counter = series.outcomes[outcome] = metrics.messages_total.labels(
                pattern, series.message_type, outcome
            )
        counter.inc()
        trace_id = recording_trace_id()
        if trace_id:
            series.duration.observe(elapsed, {"trace_id": format(trace_id, "032x")})
        else:
            series.duration.observe(elapsed)
        if outcome == "timeout":
            if series.timeouts is not None:
                series.timeouts.inc()
        elif outcome == "error" and error is not None and ctx.handlers:
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
