"""MetricsMiddleware: the bus's metrics as a middleware, for a bus without telemetry.

An instrumented bus does not need it: its :class:`~.bus_probe.BusProbe` is told of every
message by the bus itself (no middleware). This wraps the same probe (without flow
records) in ``before`` / ``after`` hooks, for a bus built with ``instrument=False`` that
wants the ``commbus_*`` families anyway: ``bus.add_middleware(MetricsMiddleware(...))``.
Sync hooks only; never raises (failures go to ``on_error``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from ..ipc import MiddlewareContext
from ._context import message_trace_id
from ._guard import ErrorReporter
from .bus_probe import BusProbe
from .metrics import CommBusMetrics, get_metrics
from .otel_metrics import OtelMetrics

__all__ = ["MetricsMiddleware"]

OnError = Callable[[str, str, BaseException], None]


class MetricsMiddleware:
    """Bus middleware recording the ``commbus_messages_*`` / ``commbus_handler_errors_total``
    / ``commbus_timeouts_total{pattern="query"}`` / ``commbus_inflight_messages`` metrics
    (see :class:`~.bus_probe.BusProbe`).

    Add it after (inside) a tracing middleware so its exemplars see the message's span.
    Its hooks run on the event-loop thread of the one bus it is added to (its counts have
    that one writer); any number of buses, on any threads, may share a registry, each with
    its own middleware.
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
        self.probe = BusProbe(self.metrics, otel=otel, on_error=self._on_error)

    def before(self, ctx: MiddlewareContext, message: Any) -> Any:
        try:
            inflight = self.probe.inflight
            pattern = ctx.pattern
            inflight[pattern] = inflight.get(pattern, 0) + 1
        except Exception as exc:
            self._on_error("metrics", "before", exc)
        return message

    def after(
        self, ctx: MiddlewareContext, message: Any, result: Any, error: BaseException | None
    ) -> Any:
        try:
            self.probe.message(
                ctx.pattern, ctx.direction, ctx.system, ctx.message_type, ctx.started,
                ctx.outcome, ctx.handlers, error, message_trace_id(ctx), message,
            )  # fmt: skip
        except Exception as exc:
            self._on_error("metrics", "after", exc)
        return result
