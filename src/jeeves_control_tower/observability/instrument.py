"""Wiring: :func:`instrument_bus` and :func:`instrument_coordinator`, and their handles.

A bus or coordinator built with defaults gets these through the core's telemetry seam
(:mod:`jeeves_control_tower.ipc.telemetry`, which finds
:mod:`jeeves_control_tower.instrumentation.builtin` by its entry point); they can also be called by
hand on an object built with ``instrument=False``. Both are idempotent (a second call returns the
live handle) and never set any global (tracer provider, registry).

Defaults: the global tracer and meter providers, ``prometheus_client.REGISTRY``, the process-wide
:func:`~.flow_default.default_flow` recorder. A coordinator inherits whatever its bus was
instrumented with unless told otherwise, and instruments *dispatch only*: its bus's
messages are the bus's business (a bus built with ``instrument=False`` stays quiet; call
:func:`instrument_bus` on it to change that).
"""

from __future__ import annotations

import weakref
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from ..instrumentation import propagation
from ..types import LoggerProtocol
from ._guard import ErrorReporter
from .bus_probe import BusProbe
from .dispatch_metrics import DispatchMetrics
from .dispatch_probe import DispatchProbe
from .dispatch_tracing import DispatchTracer
from .flow import FlowRecorder
from .flow_default import default_flow
from .handler_runs import HandlerRuns
from .metrics import DEFAULT_MAX_LABEL_VALUES, CommBusMetrics, get_metrics
from .otel_metrics import OtelMetrics
from .tracing import TracingMiddleware

__all__ = ["BusTelemetry", "CoordinatorTelemetry", "instrument_bus", "instrument_coordinator"]

_buses: weakref.WeakKeyDictionary[Any, BusTelemetry] = weakref.WeakKeyDictionary()
_coordinators: weakref.WeakKeyDictionary[Any, CoordinatorTelemetry] = weakref.WeakKeyDictionary()


class _Telemetry:
    """What a handle exposes: the pieces it wired, and ``close()``."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        registry: CollectorRegistry | None,
        metrics: CommBusMetrics | None,
        otel_metrics: OtelMetrics | None,
        flow: FlowRecorder | None,
        reporter: ErrorReporter,
        options: dict[str, Any],
    ) -> None:
        self.tracer_provider = tracer_provider  # None: the global provider
        self.meter_provider = meter_provider  # None: the global provider
        self.registry = registry  # None when metrics are off
        self.metrics = metrics
        self.otel_metrics = otel_metrics  # None when metrics are off or can never record
        self.flow = flow
        self.errors = reporter
        self.options = options
        self.closed = False


class BusTelemetry(_Telemetry):
    """Handle of an instrumented bus; ``close()`` removes its middleware (idempotent).
    It refers to its bus weakly, so that the registry of handles never keeps a bus alive."""

    def __init__(
        self, bus: Any, middlewares: tuple[Any, ...], probe: BusProbe | None, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self._bus = weakref.ref(bus)
        self.middlewares = middlewares
        self.probe = probe  # metrics + flow, told by the bus itself (no middleware)

    @property
    def bus(self) -> Any:
        """The bus (``None`` once it was garbage-collected)."""
        return self._bus()

    def receive_batch(self, settings: Any, count: int) -> Any:
        """The span record of ``count`` messages a transport read at once (see
        :meth:`TracingMiddleware.receive_batch`), or ``None`` (closed, no tracing)."""
        if self.closed:
            return None
        for mw in self.middlewares:
            if isinstance(mw, TracingMiddleware):
                return mw.receive_batch(settings, count)
        return None

    # The transports' own traffic (heartbeats, remote dispatch) bypasses the middleware
    # chain: they hand its headers here (see jeeves_control_tower.ipc.telemetry).

    def inject(self, headers: dict[str, str] | None) -> dict[str, str] | None:
        """``headers`` with the current trace context added (unchanged once closed)."""
        if not self.closed:
            try:
                return propagation.inject_into(headers)
            except Exception as exc:
                self.errors("propagation", "inject", exc)
        return headers

    def attach(self, headers: dict[str, str] | None) -> object | None:
        """Make the context ``headers`` carry current; the token for :meth:`detach`."""
        if not self.closed:
            try:
                return propagation.attach(headers)
            except Exception as exc:
                self.errors("propagation", "attach", exc)
        return None

    def detach(self, token: object | None) -> None:
        try:
            propagation.detach(token)
        except Exception as exc:
            self.errors("propagation", "detach", exc)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        bus = self._bus()
        if bus is None:
            return
        for mw in self.middlewares:
            bus.remove_middleware(mw)
        if self.probe is not None and getattr(bus, "message_probe", None) is self.probe:
            bus.set_message_probe(None)
        if _buses.get(bus) is self:
            del _buses[bus]


class CoordinatorTelemetry(_Telemetry):
    """Handle of an instrumented coordinator (dispatch telemetry); ``bus`` is the bus's
    handle, if the bus is instrumented; ``tracer`` the dispatch observer making spans and
    ``probe`` the coordinator's metrics and flow (each ``None`` when off). ``close()`` stops
    the dispatch telemetry only (a dispatch already started still ends with it)."""

    def __init__(
        self,
        coordinator: Any,
        tracer: DispatchTracer | None,
        probe: DispatchProbe | None,
        bus: BusTelemetry | None,
        **kw: Any,
    ):
        super().__init__(**kw)
        self._coordinator = weakref.ref(coordinator)
        self.bus = bus
        self.tracer = tracer
        self.probe = probe

    @property
    def coordinator(self) -> Any:
        """The coordinator (``None`` once it was garbage-collected)."""
        return self._coordinator()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        coordinator = self._coordinator()
        if coordinator is None:
            return
        if self.tracer is not None:
            coordinator.remove_observer(self.tracer)
        if self.probe is not None:
            if coordinator.dispatch_probe is self.probe:
                coordinator.set_dispatch_probe(None)
            self.probe.close()
        if _coordinators.get(coordinator) is self:
            del _coordinators[coordinator]


def _pieces(
    tracer_provider: TracerProvider | None,
    meter_provider: MeterProvider | None,
    registry: CollectorRegistry | None,
    flow: FlowRecorder | bool | None,
    logger: LoggerProtocol | None,
    max_label_values: int,
    tracing: bool,
    metrics: bool,
) -> dict[str, Any]:
    container = get_metrics(registry, max_label_values) if metrics else None
    reporter = ErrorReporter(logger, container.telemetry_errors if container else None)
    recorder = default_flow() if flow is None or flow is True else (flow or None)
    if recorder is not None:
        recorder.adopt_reporter(reporter)
    return {
        "tracer_provider": tracer_provider if tracing else None,
        "meter_provider": meter_provider if metrics else None,
        "registry": container.registry if container else None,
        "metrics": container,
        "otel_metrics": OtelMetrics.create(meter_provider) if metrics else None,
        "flow": recorder,
        "reporter": reporter,
    }


def instrument_bus(
    bus: Any,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    registry: CollectorRegistry | None = None,
    flow: FlowRecorder | bool | None = None,
    logger: LoggerProtocol | None = None,
    record_payloads: bool = False,
    max_label_values: int = DEFAULT_MAX_LABEL_VALUES,
    tracing: bool = True,
    metrics: bool = True,
) -> BusTelemetry:
    """Instrument ``bus`` and return the handle: the tracing middleware (``tracing=False``: a
    :class:`~jeeves_control_tower.instrumentation.propagation.PropagationMiddleware` in its
    place, which only messages crossing a transport run, so the trace context still crosses)
    and, for metrics and flow, a :class:`~.bus_probe.BusProbe` the bus tells of every message
    itself (``bus.set_message_probe``: no middleware; see
    :class:`jeeves_control_tower.ipc.telemetry.MessageProbe`). ``meter_provider`` (default:
    the global one) receives the OpenTelemetry messaging metrics next to the Prometheus ones (see
    :mod:`.otel_metrics`; ``metrics=False`` turns both off). ``flow=False`` / ``tracing=False`` /
    ``metrics=False`` leave a piece out; ``record_payloads`` puts message ``repr``s on spans (the
    flow recorder has its own switch). A bus that is already instrumented gets its live handle back,
    unchanged."""
    existing = _buses.get(bus)
    if existing is not None and not existing.closed:
        return existing
    logger = logger if logger is not None else getattr(bus, "logger", None)
    kw = _pieces(
        tracer_provider, meter_provider, registry, flow, logger, max_label_values, tracing, metrics
    )
    on_error = kw["reporter"]
    middlewares: list[Any] = []
    probe = None
    if kw["metrics"] is not None or kw["flow"] is not None:
        probe = BusProbe(kw["metrics"], otel=kw["otel_metrics"], flow=kw["flow"], on_error=on_error)
    if tracing:
        bus_ref = weakref.ref(bus)  # a strong one would keep the bus alive through _buses
        probe_ref = weakref.ref(probe) if probe is not None else None  # no cycle via watches
        tracer = TracingMiddleware(
            tracer_provider,
            record_payloads=record_payloads,
            on_error=on_error,
            broker=lambda: getattr(bus_ref(), "transport", None),
            # local messages skip it while the tracer is a no-op, if the probe can watch
            refresh=(
                (lambda: _refresh(bus_ref))
                if probe is not None and callable(getattr(bus, "refresh_routes", None))
                else None
            ),
            # ... as long as that probe is the bus's (it is the one that calls look())
            watched=((lambda: _watched(bus_ref, probe_ref)) if probe_ref is not None else None),
        )
        middlewares.append(tracer)
        if probe is not None:
            probe.add_watch(tracer.look)
    else:  # no spans, but the trace context still crosses the transports
        middlewares.append(propagation.PropagationMiddleware(on_error))
    if callable(getattr(kw["flow"], "handler_start", None)):
        middlewares.append(HandlerRuns(kw["flow"]))  # opt-in per-handler history
    for mw in middlewares:
        bus.add_middleware(mw)
    if probe is not None:
        bus.set_message_probe(probe)
    options = {"record_payloads": record_payloads, "max_label_values": max_label_values}
    handle = BusTelemetry(bus, tuple(middlewares), probe, options=options, **kw)
    _buses[bus] = handle
    current = getattr(bus, "telemetry", None)
    if current is None or current.closed:  # instrumented by hand (again): make it findable
        bus.telemetry = handle
    return handle


def _refresh(bus_ref: weakref.ref[Any]) -> None:
    bus = bus_ref()
    if bus is not None:
        bus.refresh_routes()


def _watched(bus_ref: weakref.ref[Any], probe_ref: weakref.ref[Any] | None) -> bool:
    bus, probe = bus_ref(), probe_ref() if probe_ref is not None else None
    return bus is not None and probe is not None and getattr(bus, "message_probe", None) is probe


def instrument_coordinator(
    coordinator: Any,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    registry: CollectorRegistry | None = None,
    flow: FlowRecorder | bool | None = None,
    logger: LoggerProtocol | None = None,
    record_payloads: bool = False,
    max_label_values: int = DEFAULT_MAX_LABEL_VALUES,
    tracing: bool = True,
    metrics: bool = True,
) -> CoordinatorTelemetry:
    """Add dispatch telemetry (spans, metrics, flow records, registry gauges) to
    ``coordinator`` and return the handle. Options left at ``None`` are inherited from the
    coordinator's bus's telemetry when it has some. Never touches the bus."""
    existing = _coordinators.get(coordinator)
    if existing is not None and not existing.closed:
        return existing
    bus_handle = _buses.get(getattr(coordinator, "commbus", None))
    if bus_handle is not None and bus_handle.closed:
        bus_handle = None
    reporter = None
    if bus_handle is not None:
        if registry is None or registry is bus_handle.registry:
            reporter = bus_handle.errors  # one rate limit and one count for the pair
        tracer_provider = tracer_provider or bus_handle.tracer_provider
        meter_provider = meter_provider or bus_handle.meter_provider
        registry = registry or bus_handle.registry
        if flow is None:
            flow = bus_handle.flow or False
    logger = logger if logger is not None else getattr(coordinator, "logger", None)
    kw = _pieces(
        tracer_provider, meter_provider, registry, flow, logger, max_label_values, tracing, metrics
    )
    if reporter is not None:
        kw["reporter"] = reporter
    if (
        bus_handle is not None
        and bus_handle.otel_metrics is not None
        and kw["otel_metrics"] is not None
        and kw["meter_provider"] is bus_handle.meter_provider
    ):
        kw["otel_metrics"] = bus_handle.otel_metrics  # one set of instruments and cache
    on_error = kw["reporter"]
    tracer = DispatchTracer(tracer_provider, on_error=on_error) if tracing else None
    metrics_part = (
        DispatchMetrics(kw["metrics"], on_error=on_error, otel=kw["otel_metrics"])
        if kw["metrics"] is not None
        else None
    )
    probe = None
    if metrics_part is not None or kw["flow"] is not None:
        probe = DispatchProbe(metrics_part, kw["flow"], on_error=on_error)
    if tracer is not None:
        coordinator.add_observer(tracer)
    if probe is not None:
        coordinator.set_dispatch_probe(probe)
    options = {"record_payloads": record_payloads, "max_label_values": max_label_values}
    handle = CoordinatorTelemetry(coordinator, tracer, probe, bus_handle, options=options, **kw)
    _coordinators[coordinator] = handle
    current = getattr(coordinator, "telemetry", None)
    if current is None or current.closed:
        coordinator.telemetry = handle
    return handle
