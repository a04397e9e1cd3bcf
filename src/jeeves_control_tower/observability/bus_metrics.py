"""MetricsMiddleware: the bus's Prometheus metrics (messages, latency, errors, timeouts,
in-flight).

Sync hooks only (the bus's fast path). Per message, outside multiprocess mode: the
in-flight count of the pattern up and down, and the outcome count, bucket count and sum of
the message's series, all plain ints and floats in this middleware's
:class:`~.aggregate.Aggregate` (folded into ``/metrics`` at scrape time by the registry's
collector); the bucket keeps the current trace id as an exemplar when a span is recording.
In multiprocess mode the same updates go to prometheus_client children bound once per
``(pattern, message_type, outcome)``. The series of a ``(pattern, message_type)`` is found
with one dict lookup (a bounded cache keyed by the raw type, in front of the label limiter).
Never raises: failures go to ``on_error``.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from ..ipc import MiddlewareContext
from ._context import message_trace_id
from ._guard import ErrorReporter
from .aggregate import Cell
from .metrics import BusSeries, CommBusMetrics, get_metrics
from .otel_metrics import OtelMetrics, outcome_error
from .semconv import error_type

__all__ = ["MetricsMiddleware"]

OnError = Callable[[str, str, BaseException], None]
_perf = time.perf_counter
_now = time.time
_bisect = bisect_left
#: Most raw ``(pattern, message_type)`` keys cached per middleware; past it, the (bounded,
#: folding) lookup in :class:`CommBusMetrics` is used for the new ones.
_CACHE_LIMIT = 4096


class MetricsMiddleware:
    """Bus middleware recording the ``commbus_messages_*`` / ``commbus_handler_errors_total``
    / ``commbus_timeouts_total{pattern="query"}`` / ``commbus_inflight_messages`` metrics.

    Add it after (inside) the tracing middleware so its exemplars see the message's span.
    ``commbus_handler_errors_total`` counts each failing handler run once (every failing
    subscriber of a publish); timeouts and errors raised by middleware are not handler
    errors. Its hooks run on the event-loop thread of the one bus it is added to (its counts
    have that one writer); any number of buses, on any threads, may share a registry, each
    with its own middleware.
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
        collector = self.metrics.aggregate
        self._aggregate = collector.attach(self) if collector is not None else None
        self._inflight_counts = self._aggregate.inflight if self._aggregate is not None else {}
        self._cells: dict[tuple[str, str], tuple[Cell, str]] = {}  # raw key -> (cell, type)

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
        if self._aggregate is not None:
            try:
                counts = self._inflight_counts
                pattern = ctx.pattern
                counts[pattern] = counts.get(pattern, 0) + 1
            except Exception as exc:
                self._on_error("metrics", "before", exc)
            return message
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
            if self._aggregate is not None:
                message_type = self._count(ctx, error, elapsed)
            else:
                message_type = self._record(ctx, error, elapsed).message_type
        except Exception as exc:
            self._on_error("metrics", "after", exc)
            return result
        otel = self.otel
        if otel is not None:
            try:
                if otel.live or (ctx.started >= otel.next_look and otel.look(ctx.started)):
                    self._record_otel(otel, ctx, error, elapsed, message_type)
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

    def _count(self, ctx: MiddlewareContext, error: BaseException | None, elapsed: float) -> str:
        """The aggregate path: what :meth:`Cell.observe` does, inlined (perf)."""
        pattern = ctx.pattern
        self._inflight_counts[pattern] -= 1  # first: a failing lookup below must not leak it
        key = (pattern, ctx.message_type)
        found = self._cells.get(key)
        if found is None:
            found = self._bind_cell(key)
        cell = found[0]
        outcome = ctx.outcome
        outcomes = cell.outcomes
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        i = _bisect(cell.bounds, elapsed)
        cell.counts[i] += 1
        cell.sum += elapsed
        trace_id = message_trace_id(ctx)
        if trace_id:
            cell.exemplars[i] = (trace_id, elapsed, _now())
        if outcome != "ok":
            if outcome == "timeout":
                cell.extra[0] += 1
            elif outcome == "error" and error is not None and ctx.handlers:
                errors = cell.errors
                for label in self._error_labels(pattern, error):
                    errors[label] = errors.get(label, 0) + 1
        return found[1]

    def _bind_cell(self, key: tuple[str, str]) -> tuple[Cell, str]:
        assert self._aggregate is not None
        message_type = self.metrics.message_types(key[1])
        found = (self._aggregate.bus_cell(key[0], message_type), message_type)
        if len(self._cells) < _CACHE_LIMIT:
            self._cells[key] = found
        return found

    def _error_labels(self, pattern: str, error: BaseException) -> list[str]:
        """The folded ``error_type`` of each failing handler run in ``error``."""
        errors = (
            error.exceptions
            if pattern == "publish" and isinstance(error, BaseExceptionGroup)
            else (error,)
        )
        return [self.metrics.error_types(error_type(exc)) for exc in errors]

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
            for label in self._error_labels(pattern, error):
                child = series.errors.get(label)
                if child is None:
                    child = series.errors[label] = self.metrics.handler_errors.labels(
                        pattern, series.message_type, label
                    )
                child.inc()
        return series
