"""DispatchMetrics: the coordinator's Prometheus metrics, as a dispatch/registry observer.

Dispatch counters and latency (with a trace-id exemplar), retries, timeouts, in-flight
dispatches, and the per-service gauges (load, capacity, queue depth, health) kept current
from the registry's change notifications; a service that is unregistered is removed from
the per-service gauges. Services past the label limit are folded into ``other`` in the
dispatch metrics and are left out of the per-service gauges (a gauge cannot be summed
meaningfully). Outside multiprocess mode the dispatch counts, latency, retries, timeouts and
in-flight count are plain Python in this observer's :class:`~.aggregate.Aggregate`, folded
into ``/metrics`` at scrape time (see :mod:`.aggregate`). Never raises: failures go to
``on_error``.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from prometheus_client import CollectorRegistry

from ..ipc import WholeDispatchObserver
from ..types import DispatchTarget, Envelope, ServiceDescriptor
from ._context import recording_trace_id
from ._guard import ErrorReporter
from .aggregate import Cell
from .bus_metrics import OnError
from .inflight_counts import InflightCounts
from .metrics import OTHER, CommBusMetrics, DispatchSeries, get_metrics
from .otel_metrics import OtelMetrics, outcome_error
from .semconv import SYSTEM

__all__ = ["DispatchMetrics"]

_CACHE_LIMIT = 4096
_perf = time.perf_counter
_PER_SERVICE = ("service_load", "service_capacity", "service_queue_depth", "service_healthy")


class _ServiceGauges:
    __slots__ = (
        "capacity",
        "descriptor",
        "healthy",
        "last_capacity",
        "last_healthy",
        "last_queue",
        "load",
        "queue",
    )

    def __init__(self, metrics: CommBusMetrics, name: str) -> None:
        self.load = metrics.service_load.labels(name)
        self.capacity = metrics.service_capacity.labels(name)
        self.queue = metrics.service_queue_depth.labels(name)
        self.healthy = metrics.service_healthy.labels(name)
        self.last_capacity = -1
        self.last_healthy: bool | None = None
        self.last_queue = -1
        self.descriptor: ServiceDescriptor | None = None

    def watch(self, service: ServiceDescriptor) -> None:
        """Outside multiprocess mode: the gauges read ``service`` (the registry's live
        descriptor; single attribute reads, atomic under the GIL) and the last queue depth
        notified when they are scraped, instead of being set on every change."""
        self.descriptor = service
        self.load.set_function(lambda: service.current_load)
        self.capacity.set_function(lambda: service.max_concurrent)
        self.healthy.set_function(lambda: 1 if service.healthy else 0)
        self.queue.set_function(lambda: self.last_queue)


class DispatchMetrics(WholeDispatchObserver):
    """A :class:`~jeeves_control_tower.ipc.DispatchObserver` recording the
    ``commbus_dispatch_*``, ``commbus_service_*`` and ``commbus_services_registered``
    metrics of one coordinator. Call its hooks from the coordinator's event loop only."""

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
        self._inflight: Any = None
        self._gauges: dict[str, _ServiceGauges] = {}
        self._types: dict[str, str] = {}  # registered service -> service_type
        self._series: dict[tuple[str, str], DispatchSeries] = {}  # raw (service, method)
        collector = self.metrics.aggregate
        self._aggregate = collector.attach(self) if collector is not None else None
        self._cells: dict[tuple[str, str], tuple[Cell, str]] = {}  # raw key -> (cell, service)
        self._closed = False  # close(): registry changes no longer reach the metrics
        # the gauges read the live descriptor at scrape time (see watch), so a change of
        # load alone (every dispatch, twice) needs no call here; multiprocess mode sets them
        self.observes_load = self._aggregate is None

    # ------------------------------------------------------------------ dispatch

    def dispatch_start(self, target: DispatchTarget, envelope: Envelope) -> int:
        """Counts the dispatch in flight; returns the trace id current at the start (the
        dispatch span's, when the tracer runs first), for the exemplar."""
        try:
            trace_id = recording_trace_id()
        except Exception as exc:
            self._on_error("metrics", "dispatch_start", exc)
            trace_id = 0
        try:  # counted in flight whatever the lookup did: dispatch_end takes it out
            aggregate = self._aggregate
            if aggregate is not None:
                counts = aggregate.inflight
                counts["dispatch"] = counts.get("dispatch", 0) + 1
                return trace_id
            if self._inflight is None:
                self._inflight = self.metrics.inflight_for("dispatch")
            self._inflight.inc()
        except Exception as exc:
            self._on_error("metrics", "dispatch_start", exc)
        return trace_id

    def dispatch_end(
        self,
        token: Any,
        target: DispatchTarget,
        outcome: str,
        attempts: int,
        error: BaseException | None,
        duration: float,
    ) -> None:
        try:  # counted, then out of flight
            self.count(token, target, outcome, attempts, error, duration)
        finally:
            try:
                if self._aggregate is not None:
                    self._aggregate.inflight["dispatch"] -= 1
                else:
                    if self._inflight is None:
                        self._inflight = self.metrics.inflight_for("dispatch")
                    self._inflight.dec()
            except Exception as exc:
                self._on_error("metrics", "dispatch_end", exc)

    def inflight_counts(self) -> dict[str, int]:
        """In-flight counts for a :class:`~.dispatch_probe.DispatchProbe` to keep for these
        metrics (key ``"dispatch"``): the aggregate's, or in multiprocess mode a new dict that
        sets this process's gauge."""
        if self._aggregate is not None:
            counts = self._aggregate.inflight
            counts.setdefault("dispatch", 0)
            return counts
        return InflightCounts(self.metrics, self._on_error, ("dispatch",))

    def count(
        self,
        trace_id: int,
        target: DispatchTarget,
        outcome: str,
        attempts: int,
        error: BaseException | None,
        duration: float,
        now: float | None = None,
    ) -> None:
        """Count one dispatch done (not its in-flight count): ``trace_id`` (0: none) is the
        exemplar's; ``now``, when given, a ``time.perf_counter()`` reading at its end (one
        clock read saved). Never raises."""
        metrics = self.metrics
        aggregate = self._aggregate
        if aggregate is not None:
            try:
                found = self._cells.get((target.service_name, target.method))
                if found is None:
                    found = self._bind_cell(target)
                cell, destination = found
                cell.observe(outcome, duration, trace_id)
                if attempts > 1:
                    cell.extra[1] += attempts - 1
                if outcome == "timeout":
                    cell.extra[0] += 1
            except Exception as exc:
                self._on_error("metrics", "dispatch_end", exc)
                return
        else:
            try:
                destination = self._record(trace_id, target, outcome, attempts, duration)
            except Exception as exc:
                self._on_error("metrics", "dispatch_end", exc)
                return
        otel = self.otel
        if otel is not None:
            try:
                if not otel.live and now is None:
                    now = _perf()
                if otel.live or (now is not None and now >= otel.next_look and otel.look(now)):
                    etype = outcome_error(outcome, error, metrics.error_types)
                    otel.sent(SYSTEM, "dispatch", destination, etype, duration)
            except Exception as exc:
                self._on_error("otel_metrics", "dispatch_end", exc)

    def _bind_cell(self, target: DispatchTarget) -> tuple[Cell, str]:
        """The aggregate cell of ``target`` and its folded service (kept for the next
        dispatch while the cache has room)."""
        assert self._aggregate is not None
        key = (target.service_name, target.method)
        metrics = self.metrics
        service = metrics.services(key[0])
        found = (self._aggregate.dispatch_cell(service, metrics.methods(key[1])), service)
        if len(self._cells) < _CACHE_LIMIT:
            self._cells[key] = found
        return found

    def _record(
        self, token: Any, target: DispatchTarget, outcome: str, attempts: int, duration: float
    ) -> str:
        """The multiprocess path: prometheus_client children; the folded service (the
        in-flight count is the caller's)."""
        metrics = self.metrics
        key = (target.service_name, target.method)
        series = self._series.get(key)  # perf: one lookup, not two label limiters
        if series is None:
            series = metrics.dispatch_series(*key)
            if len(self._series) < _CACHE_LIMIT:
                self._series[key] = series
        counter = series.outcomes.get(outcome)
        if counter is None:
            counter = series.outcomes[outcome] = metrics.dispatch_total.labels(
                series.service, series.method, outcome
            )
        counter.inc()
        if token:
            series.duration.observe(duration, {"trace_id": format(token, "032x")})
        else:
            series.duration.observe(duration)
        if attempts > 1:
            series.retries.inc(attempts - 1)
        if outcome == "timeout":
            series.timeouts.inc()
        return series.service

    # ------------------------------------------------------------------ registry

    def service_changed(self, service: ServiceDescriptor, queue_depth: int) -> None:
        if self._closed:
            return
        try:
            name = service.name
            if name not in self._types:
                self._types[name] = service.service_type
                self.metrics.services_registered.labels(service.service_type).inc()
            gauges = self._gauges.get(name)
            if gauges is None:
                if self.metrics.services(name) == OTHER:
                    return
                gauges = self._gauges[name] = _ServiceGauges(self.metrics, name)
            if self._aggregate is not None:  # perf: read at scrape time (see watch)
                gauges.last_queue = queue_depth
                if gauges.descriptor is not service:
                    gauges.watch(service)
                return
            gauges.load.set(service.current_load)
            if queue_depth != gauges.last_queue:  # perf: load changes on every dispatch, this not
                gauges.queue.set(queue_depth)
                gauges.last_queue = queue_depth
            if service.max_concurrent != gauges.last_capacity:
                gauges.capacity.set(service.max_concurrent)
                gauges.last_capacity = service.max_concurrent
            healthy = bool(service.healthy)
            if healthy != gauges.last_healthy:
                gauges.healthy.set(1 if healthy else 0)
                gauges.last_healthy = healthy
        except Exception as exc:
            self._on_error("metrics", "service_changed", exc)

    def service_removed(self, service: ServiceDescriptor) -> None:
        if not self._closed:
            self._withdraw(service.name, "service_removed")

    def close(self) -> None:
        """Withdraw what the registry's changes put in the metrics (each service's
        ``commbus_services_registered`` count and per-service gauges), and take no more
        registry changes: the coordinator is no longer watched through these metrics (a
        dispatch still in flight is counted when it ends). Idempotent."""
        if self._closed:
            return
        self._closed = True
        for name in list(self._types) + list(self._gauges):
            self._withdraw(name, "close")

    def _withdraw(self, name: str, hook: str) -> None:
        try:
            service_type = self._types.pop(name, None)
            if service_type is not None:
                self.metrics.services_registered.labels(service_type).dec()
            if self._gauges.pop(name, None) is not None:
                for attr in _PER_SERVICE:
                    with contextlib.suppress(KeyError):
                        getattr(self.metrics, attr).remove(name)
        except Exception as exc:
            self._on_error("metrics", hook, exc)
