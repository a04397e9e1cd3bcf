"""Every Prometheus metric of the bus and the coordinator, declared once per registry.

:func:`get_metrics` returns the one :class:`CommBusMetrics` bound to a registry (created on
first use, then cached), so any number of buses and coordinators can share a registry
without a "Duplicated timeseries" error. All families are registered when the container is
created, so ``/metrics`` lists each of them (``# HELP`` / ``# TYPE``) before the first
message. The metric names and labels are a contract (dashboard, Grafana): see
:data:`METRIC_NAMES`.

Label cardinality is bounded: each of ``message_type``, ``service``, ``method`` and
``error_type`` admits at most ``max_label_values`` distinct values per registry; later ones
are folded into ``"other"``.

Outside multiprocess mode the counters, histograms and the in-flight gauge are kept in plain
Python by each recorder and exposed by one custom collector per registry
(:class:`.aggregate.AggregateCollector`, the ``aggregate`` attribute): per message that is a
dict lookup and a ``bisect`` instead of a prometheus_client lock per update. With
``PROMETHEUS_MULTIPROC_DIR`` set they are prometheus_client collectors (the ``*_total`` /
``*_duration`` / ``inflight`` attributes), whose values go to the multiprocess files.

Thread-safety: everything here may be used from any thread (prometheus_client is
thread-safe; the caches tolerate races by at worst binding a child twice).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from .._collectors import declare as _declare
from .aggregate import AggregateCollector
from .multiprocess import multiprocess_dir

__all__ = [
    "DEFAULT_MAX_LABEL_VALUES",
    "GAUGE_MODES",
    "LATENCY_BUCKETS",
    "METRIC_NAMES",
    "OTHER",
    "BusSeries",
    "CommBusMetrics",
    "DispatchSeries",
    "LabelLimiter",
    "get_metrics",
]

DEFAULT_MAX_LABEL_VALUES = 200
OTHER = "other"
#: Seconds: 50 µs (an in-process handler) up to 30 s (a slow dispatch).
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
_MAX_LABEL_LENGTH = 200

#: The contract: every family this module registers (``_total`` as exposed).
METRIC_NAMES = (
    "commbus_messages_total",
    "commbus_message_duration_seconds",
    "commbus_handler_errors_total",
    "commbus_timeouts_total",
    "commbus_inflight_messages",
    "commbus_dispatch_total",
    "commbus_dispatch_duration_seconds",
    "commbus_dispatch_retries_total",
    "commbus_service_load",
    "commbus_service_capacity",
    "commbus_service_queue_depth",
    "commbus_service_healthy",
    "commbus_services_registered",
    "commbus_telemetry_errors_total",
)


class LabelLimiter:
    """Admits the first ``max_values`` distinct label values; maps every later one (and any
    value longer than 200 characters) to ``"other"``. Memory stays bounded: values that
    are folded are not remembered."""

    __slots__ = ("_admitted", "_lock", "max_values")

    def __init__(self, max_values: int = DEFAULT_MAX_LABEL_VALUES) -> None:
        if not isinstance(max_values, int) or max_values < 1:
            raise ValueError(f"max_label_values must be an int >= 1, got {max_values!r}")
        self.max_values = max_values
        self._admitted: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        found = self._admitted.get(value)
        if found is not None:
            return found
        with self._lock:
            if value in self._admitted:
                return value
            if len(self._admitted) >= self.max_values or len(value) > _MAX_LABEL_LENGTH:
                return OTHER
            self._admitted[value] = value
            return value

    def __len__(self) -> int:
        return len(self._admitted)


class BusSeries:
    """Pre-bound children for one ``(pattern, message_type)``."""

    __slots__ = ("duration", "errors", "message_type", "outcomes", "pattern", "timeouts")

    def __init__(self, metrics: CommBusMetrics, pattern: str, message_type: str) -> None:
        self.pattern = pattern
        self.message_type = message_type  # folded
        self.duration = metrics.message_duration.labels(pattern, message_type)
        self.outcomes: dict[str, Any] = {}
        self.errors: dict[str, Any] = {}
        # Only queries time out on the bus; no zero series for the other patterns.
        self.timeouts = (
            metrics.timeouts_total.labels(pattern, message_type) if pattern == "query" else None
        )


class DispatchSeries:
    """Pre-bound children for one ``(service, method)``."""

    __slots__ = ("duration", "method", "outcomes", "retries", "service", "timeouts")

    def __init__(self, metrics: CommBusMetrics, service: str, method: str) -> None:
        self.service = service  # folded
        self.method = method  # folded
        self.duration = metrics.dispatch_duration.labels(service, method)
        self.retries = metrics.dispatch_retries.labels(service, method)
        self.timeouts = metrics.timeouts_total.labels("dispatch", service)
        self.outcomes: dict[str, Any] = {}


#: How each gauge of this module aggregates across the worker processes of a pre-fork server
#: (``PROMETHEUS_MULTIPROC_DIR`` set; see ``docs/observability.md``). ``live*`` modes drop
#: a worker's values once ``prometheus_client.multiprocess.mark_process_dead(pid)`` is
#: called for it: they describe what is running now, which a dead worker no longer does.
GAUGE_MODES: dict[str, str] = {
    # In progress across the live workers: the sum, as one process would report it.
    "commbus_inflight_messages": "livesum",
    # Each worker runs its own coordinator: attempts running, slots and waiting dispatches
    # of one service add up over the workers (load / capacity stays a utilisation).
    "commbus_service_load": "livesum",
    "commbus_service_capacity": "livesum",
    "commbus_service_queue_depth": "livesum",
    # 1 only while every live worker that has the service sees it healthy.
    "commbus_service_healthy": "livemin",
    # Registrations across the live workers.
    "commbus_services_registered": "livesum",
}


def _gauge(name: str, doc: str, labels: tuple[str, ...], registry: CollectorRegistry) -> Any:
    return _declare(Gauge, name, doc, labels, registry, multiprocess_mode=GAUGE_MODES[name])


def _aggregate(
    name: str, doc: str, labels: tuple[str, ...], registry: CollectorRegistry, buckets: Any
) -> AggregateCollector:
    """``declare``'s factory for the one :class:`AggregateCollector` of ``registry``."""
    collector = AggregateCollector(buckets)
    registry.register(collector)
    return collector


class CommBusMetrics:
    """The metric families of one registry, plus label limiters and pre-bound children.

    Build it with :func:`get_metrics`, not directly (a second instance on the same
    registry reuses the collectors but not the caches)."""

    def __init__(
        self, registry: CollectorRegistry, max_label_values: int = DEFAULT_MAX_LABEL_VALUES
    ) -> None:
        self.registry = registry
        self.message_types = LabelLimiter(max_label_values)
        self.services = LabelLimiter(max_label_values)
        self.methods = LabelLimiter(max_label_values)
        self.error_types = LabelLimiter(max_label_values)
        r, b = registry, LATENCY_BUCKETS
        #: The counters and histograms in plain Python, exposed by one custom collector
        #: (see :mod:`.aggregate`); ``None`` in multiprocess mode, where they must be in
        #: prometheus_client's files and the families below are used instead.
        self.aggregate: AggregateCollector | None = None
        self.messages_total: Any = None
        self.message_duration: Any = None
        self.handler_errors: Any = None
        self.timeouts_total: Any = None
        self.inflight: Any = None
        self.dispatch_total: Any = None
        self.dispatch_duration: Any = None
        self.dispatch_retries: Any = None
        if multiprocess_dir() is None:
            self.aggregate = _declare(_aggregate, "commbus_messages", "", (), r, buckets=b)
        else:
            self._declare_families(r, b)
        self.service_load = _gauge(
            "commbus_service_load", "Attempts running in the service (current_load).",
            ("service",), r,
        )  # fmt: skip
        self.service_capacity = _gauge(
            "commbus_service_capacity", "max_concurrent of the service.", ("service",), r
        )
        self.service_queue_depth = _gauge(
            "commbus_service_queue_depth", "Dispatches waiting for a slot.", ("service",), r
        )
        self.service_healthy = _gauge(
            "commbus_service_healthy", "1 if the service is healthy, else 0.", ("service",), r
        )
        self.services_registered = _gauge(
            "commbus_services_registered", "Registered services by service_type.",
            ("service_type",), r,
        )  # fmt: skip
        self.telemetry_errors = _declare(
            Counter, "commbus_telemetry_errors_total",
            "Failures inside telemetry hooks (caught; the message path is unaffected).",
            ("component",), r,
        )  # fmt: skip
        self._bus: dict[tuple[str, str], BusSeries] = {}
        self._dispatch: dict[tuple[str, str], DispatchSeries] = {}
        self._inflight: dict[str, Any] = {}

    def _declare_families(self, r: CollectorRegistry, b: tuple[float, ...]) -> None:
        """Multiprocess mode: the counters, histograms and the in-flight gauge as
        prometheus_client collectors (their values go to the multiprocess files)."""
        self.messages_total = _declare(
            Counter, "commbus_messages_total", "Bus messages by pattern, type and outcome.",
            ("pattern", "message_type", "outcome"), r,
        )  # fmt: skip
        self.message_duration = _declare(
            Histogram, "commbus_message_duration_seconds",
            "Time from entering the bus until every handler finished.",
            ("pattern", "message_type"), r, buckets=b,
        )  # fmt: skip
        self.handler_errors = _declare(
            Counter, "commbus_handler_errors_total", "Handler runs that raised, by error type.",
            ("pattern", "message_type", "error_type"), r,
        )  # fmt: skip
        self.timeouts_total = _declare(
            Counter, "commbus_timeouts_total",
            "Timed-out queries (target = message type) and dispatches (target = service).",
            ("pattern", "target"), r,
        )  # fmt: skip
        self.inflight = _gauge(
            "commbus_inflight_messages", "Messages and dispatches in progress.", ("pattern",), r
        )
        self.dispatch_total = _declare(
            Counter, "commbus_dispatch_total", "Dispatches by service, method and outcome.",
            ("service", "method", "outcome"), r,
        )  # fmt: skip
        self.dispatch_duration = _declare(
            Histogram, "commbus_dispatch_duration_seconds",
            "Whole dispatch time: slot wait, attempts and backoff.",
            ("service", "method"), r, buckets=b,
        )  # fmt: skip
        self.dispatch_retries = _declare(
            Counter, "commbus_dispatch_retries_total", "Dispatch attempts after the first.",
            ("service", "method"), r,
        )  # fmt: skip

    def bus_series(self, pattern: str, message_type: str) -> BusSeries:
        """Children for a bus message (``message_type`` is folded here)."""
        key = (pattern, self.message_types(message_type))
        series = self._bus.get(key)
        if series is None:
            series = self._bus[key] = BusSeries(self, *key)
        return series

    def dispatch_series(self, service: str, method: str) -> DispatchSeries:
        """Children for a dispatch (``service`` and ``method`` are folded here)."""
        key = (self.services(service), self.methods(method))
        series = self._dispatch.get(key)
        if series is None:
            series = self._dispatch[key] = DispatchSeries(self, *key)
        return series

    def inflight_for(self, pattern: str) -> Any:
        child = self._inflight.get(pattern)
        if child is None:
            child = self._inflight[pattern] = self.inflight.labels(pattern)
        return child


_lock = threading.Lock()
_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, CommBusMetrics] = (
    weakref.WeakKeyDictionary()
)


def get_metrics(
    registry: CollectorRegistry | None = None,
    max_label_values: int = DEFAULT_MAX_LABEL_VALUES,
) -> CommBusMetrics:
    """The :class:`CommBusMetrics` of ``registry`` (default ``prometheus_client.REGISTRY``),
    creating and registering every family on first use. ``max_label_values`` only matters
    on that first call. Thread-safe."""
    reg = REGISTRY if registry is None else registry
    with _lock:
        metrics = _by_registry.get(reg)
        if metrics is None:
            metrics = _by_registry[reg] = CommBusMetrics(reg, max_label_values)
        return metrics
