"""Wiring: what a bus or coordinator built with defaults gets, option inheritance,
idempotence, switching pieces off, and ``close``."""

from __future__ import annotations

import asyncio
import gc
import weakref

from prometheus_client import REGISTRY, CollectorRegistry

from jeeves_control_tower.instrumentation.propagation import PropagationMiddleware
from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus, get_commbus, reset_commbus
from jeeves_control_tower.observability import (
    BusTelemetry,
    CoordinatorTelemetry,
    FlowRecorder,
    TracingMiddleware,
    default_flow,
    instrument_bus,
    instrument_coordinator,
)
from jeeves_control_tower.observability.bus_probe import BusProbe
from jeeves_control_tower.observability.history import History
from tests.helpers import gated

from .conftest import Telemetry
from .support import Stored, echo, envelope, register, target


def test_defaults(tel: Telemetry) -> None:
    bus = InMemoryCommBus(tracer_provider=tel.provider)
    handle = bus.telemetry
    assert isinstance(handle, BusTelemetry)
    assert handle.registry is REGISTRY and handle.flow is default_flow()
    # metrics and flow ride no middleware: the bus tells the handle's probe of each message
    assert [type(m) for m in bus.middlewares] == [TracingMiddleware]
    assert isinstance(handle.probe, BusProbe) and bus.message_probe is handle.probe
    assert handle.probe.flow is default_flow() and handle.probe.metrics is handle.metrics
    again = InMemoryCommBus(tracer_provider=tel.provider)  # same registry: no collision
    assert again.telemetry.metrics is handle.metrics
    handle.close()
    again.telemetry.close()


def test_instrument_false() -> None:
    bus = InMemoryCommBus(instrument=False)
    assert bus.telemetry is None and bus.middlewares == ()
    coordinator = CommBusCoordinator(None, bus, instrument=False)
    assert coordinator.telemetry is None


async def test_coordinator_on_an_instrumented_bus_adds_no_bus_middleware(
    instrumented_bus: InMemoryCommBus, instrumented_coordinator: CommBusCoordinator, tel: Telemetry
) -> None:
    assert len(instrumented_bus.middlewares) == 1
    assert instrumented_bus.message_probe is instrumented_bus.telemetry.probe
    handle = instrumented_coordinator.telemetry
    assert isinstance(handle, CoordinatorTelemetry)
    assert handle.bus is instrumented_bus.telemetry
    assert handle.registry is tel.registry and handle.flow is tel.flow
    assert handle.tracer_provider is tel.provider
    register(instrumented_coordinator, handler=echo)
    await instrumented_coordinator.dispatch(target(), envelope())
    assert tel.span("dispatch svc")
    assert tel.sample("commbus_dispatch_total", service="svc", method="run", outcome="ok") == 1


async def test_coordinator_options_override_the_bus(
    tel: Telemetry, instrumented_bus: InMemoryCommBus
) -> None:
    registry, flow = CollectorRegistry(), FlowRecorder()
    coordinator = CommBusCoordinator(None, instrumented_bus, registry=registry, flow=flow)
    register(coordinator, handler=echo)
    await coordinator.dispatch(target(), envelope())
    labels = {"service": "svc", "method": "run", "outcome": "ok"}
    assert registry.get_sample_value("commbus_dispatch_total", labels) == 1
    assert tel.sample("commbus_dispatch_total", **labels) is None
    assert flow.last_seq == 1 and tel.flow.last_seq == 0


async def test_coordinator_on_a_quiet_bus_instruments_dispatch_only(tel: Telemetry) -> None:
    bus = InMemoryCommBus(instrument=False)
    coordinator = CommBusCoordinator(None, bus, **tel.options)
    assert bus.middlewares == () and coordinator.telemetry.bus is None
    bus.subscribe("Stored", lambda e: None)
    register(coordinator, handler=echo)
    await bus.publish(Stored())
    await coordinator.dispatch(target(), envelope())
    assert [s.name for s in tel.spans()] == ["process svc", "dispatch svc"]


def test_instrumenting_twice_returns_the_live_handle(tel: Telemetry) -> None:
    bus = InMemoryCommBus(instrument=False)
    first = instrument_bus(bus, **tel.options)
    assert instrument_bus(bus, **tel.options) is first
    assert bus.telemetry is first  # findable by serve(bus) and reset_commbus
    assert len(bus.middlewares) == 1 and bus.message_probe is first.probe
    coordinator = CommBusCoordinator(None, bus, instrument=False)
    handle = instrument_coordinator(coordinator)
    assert instrument_coordinator(coordinator) is handle
    assert handle.registry is tel.registry  # inherited from the bus


def test_pieces_can_be_left_out(tel: Telemetry) -> None:
    bus = InMemoryCommBus(instrument=False)
    handle = instrument_bus(bus, tracer_provider=tel.provider, tracing=False, metrics=False)
    # No spans, but the trace context still crosses transports (PropagationMiddleware).
    assert [type(m) for m in bus.middlewares] == [PropagationMiddleware]
    assert handle.metrics is None and handle.registry is None
    assert handle.probe is not None and handle.probe.metrics is None and handle.probe.flow
    quiet = InMemoryCommBus(registry=tel.registry, flow=False, tracing=False)
    assert [type(m) for m in quiet.middlewares] == [PropagationMiddleware]
    assert quiet.telemetry.flow is None and quiet.telemetry.probe.flow is None
    silent = InMemoryCommBus(flow=False, tracing=False, metrics=False)
    assert silent.telemetry.probe is None and silent.message_probe is None


async def test_close(tel: Telemetry) -> None:
    bus = InMemoryCommBus(**tel.options)
    coordinator = CommBusCoordinator(None, bus)
    register(coordinator, handler=echo)
    bus.telemetry.close()
    bus.telemetry.close()
    assert bus.middlewares == () and bus.message_probe is None
    await bus.publish(Stored())
    assert tel.spans() == []

    gate = asyncio.Event()
    register(coordinator, "slow", handler=gated(gate))
    running = asyncio.ensure_future(coordinator.dispatch(target("slow"), envelope()))
    await asyncio.sleep(0)
    coordinator.telemetry.close()  # mid-dispatch: that dispatch still ends its span
    gate.set()
    await running
    await coordinator.dispatch(target(), envelope())  # after close: nothing
    assert [s.name for s in tel.spans()] == ["process slow", "dispatch slow"]
    assert tel.flow.last_seq == 1
    fresh = instrument_bus(bus, **tel.options)
    assert fresh is not None and len(bus.middlewares) == 1 and bus.message_probe is fresh.probe


def test_reset_commbus_closes_the_global_bus_telemetry() -> None:
    bus = get_commbus()
    assert bus.telemetry is not None and len(bus.middlewares) == 1 and bus.message_probe
    reset_commbus()
    assert not bus.middlewares and bus.telemetry.closed and bus.message_probe is None


def test_handles_do_not_keep_their_bus_or_coordinator_alive(tel: Telemetry) -> None:
    bus = InMemoryCommBus(**tel.options)
    coordinator = CommBusCoordinator(None, bus)
    handle = coordinator.telemetry
    refs: list[weakref.ref[object]] = [weakref.ref(bus), weakref.ref(coordinator)]
    del bus, coordinator
    gc.collect()
    assert [r() for r in refs] == [None, None]
    assert handle.coordinator is None
    handle.close()  # harmless


async def test_close_without_tracing_mid_dispatch(tel: Telemetry) -> None:
    """Metrics and flow only (the coordinator's probe, no observer): a dispatch running at
    ``close`` is still counted once and leaves flight; later ones reach nothing."""
    coordinator = CommBusCoordinator(
        None, InMemoryCommBus(instrument=False), registry=tel.registry, flow=tel.flow, tracing=False
    )
    gate = asyncio.Event()
    register(coordinator, "slow", handler=gated(gate))
    running = asyncio.ensure_future(coordinator.dispatch(target("slow"), envelope()))
    await asyncio.sleep(0)
    assert tel.sample("commbus_inflight_messages", pattern="dispatch") == 1
    assert tel.flow.stats()["inflight"]["dispatch"] == 1
    coordinator.telemetry.close()
    gate.set()
    await running
    await coordinator.dispatch(target("slow"), envelope())  # after close: nothing
    ok = {"service": "slow", "method": "run", "outcome": "ok"}
    assert tel.sample("commbus_dispatch_total", **ok) == 1
    # out of flight (the closed recorder, collected, leaves no in-flight series behind)
    assert not tel.sample("commbus_inflight_messages", pattern="dispatch")
    assert tel.flow.last_seq == 1 and tel.flow.stats()["inflight"]["dispatch"] == 0
    assert tel.flow.history.snapshot(60, 60)["services"]["slow"]["requests"]["total"] == 1


async def test_close_mid_dispatch_still_tells_the_history_the_slot_given_back(
    tel: Telemetry,
) -> None:
    now = [1000.0]
    flow = FlowRecorder(history=History(clock=lambda: now[0]))
    coordinator = CommBusCoordinator(
        None, InMemoryCommBus(instrument=False), registry=tel.registry, flow=flow, tracing=False
    )
    gate = asyncio.Event()
    register(coordinator, "slow", handler=gated(gate))
    running = asyncio.ensure_future(coordinator.dispatch(target("slow"), envelope()))
    await asyncio.sleep(0)
    now[0] += 0.5
    coordinator.telemetry.close()  # "a dispatch already started still ends with it"
    gate.set()
    await running
    now[0] += 2.0
    (row,) = flow.services()
    assert row["current_load"] == 0
    load = flow.history.snapshot(2, 1)["services"]["slow"]["load"]
    assert load["avgs"][-1] == row["current_load"]
