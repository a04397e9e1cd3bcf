"""CommBusInstrumentor: instrument(tracer_provider, meter_provider, registry) switches the
telemetry of what is built afterwards, uninstrument() takes it off; its registration and
its dependencies are those pyproject.toml declares."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from jeeves_control_tower.instrumentation import CommBusInstrumentor
from jeeves_control_tower.instrumentation.builtin import DEFAULT
from jeeves_control_tower.instrumentation.instrumentor import INSTRUMENTS
from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.ipc.telemetry import (
    ENTRY_POINT_GROUP,
    get_instrumentation,
    reset_instrumentation,
)
from tests.observability.conftest import Telemetry
from tests.observability.support import GetState, Stored, echo, envelope, register, target

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.fixture
def tel() -> Iterator[Telemetry]:
    t = Telemetry()
    yield t
    t.provider.shutdown()


@pytest.fixture
def instrumentor() -> Iterator[CommBusInstrumentor]:
    instrumentor = CommBusInstrumentor()
    assert not instrumentor.is_instrumented_by_opentelemetry
    yield instrumentor
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    reset_instrumentation()


async def test_instrument_wires_new_buses_and_coordinators_to_the_given_providers(
    instrumentor: CommBusInstrumentor, tel: Telemetry
) -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    instrumentor.instrument(
        tracer_provider=tel.provider, meter_provider=meters, registry=tel.registry, flow=False
    )
    assert instrumentor.is_instrumented_by_opentelemetry
    bus = InMemoryCommBus()
    coordinator = CommBusCoordinator(None, bus)
    register(coordinator, handler=echo)
    bus.register_handler("GetState", lambda q: "state")
    await bus.publish(Stored())
    assert await bus.query(GetState()) == "state"
    await coordinator.dispatch(target(), envelope())
    names = sorted(s.name for s in tel.spans())
    assert names == [
        "dispatch svc",
        "process GetState",
        "process svc",
        "publish Stored",
        "query GetState",
    ]
    labels = {"pattern": "query", "message_type": "GetState", "outcome": "ok"}
    assert tel.sample("commbus_messages_total", **labels) == 1.0
    data = reader.get_metrics_data()
    assert data is not None
    metrics = {
        m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    assert "messaging.client.sent.messages" in metrics
    meters.shutdown()


def test_a_constructor_keyword_wins_and_instrument_false_still_means_none(
    instrumentor: CommBusInstrumentor, tel: Telemetry
) -> None:
    instrumentor.instrument(tracer_provider=tel.provider, registry=tel.registry, flow=False)
    other = Telemetry()
    bus = InMemoryCommBus(registry=other.registry)
    assert bus.telemetry.registry is other.registry
    assert bus.telemetry.tracer_provider is tel.provider
    assert InMemoryCommBus(instrument=False).telemetry is None
    other.provider.shutdown()


def test_buses_built_before_keep_their_telemetry(
    instrumentor: CommBusInstrumentor, tel: Telemetry
) -> None:
    before = InMemoryCommBus()  # the default: the global providers
    handle = before.telemetry
    instrumentor.instrument(tracer_provider=tel.provider, registry=tel.registry, flow=False)
    after = InMemoryCommBus()
    assert before.telemetry is handle and not handle.closed
    assert handle.tracer_provider is None and after.telemetry.tracer_provider is tel.provider


def test_uninstrument_takes_the_seams_telemetry_off_and_leaves_hand_made_telemetry(
    instrumentor: CommBusInstrumentor, tel: Telemetry
) -> None:
    from jeeves_control_tower.observability import instrument_bus

    by_default = InMemoryCommBus()
    instrumentor.instrument(tracer_provider=tel.provider, registry=tel.registry, flow=False)
    bus = InMemoryCommBus()
    coordinator = CommBusCoordinator(None, bus)
    by_hand = InMemoryCommBus(instrument=False)
    hand_made = instrument_bus(by_hand, tracer_provider=tel.provider, registry=tel.registry)
    instrumentor.uninstrument()
    assert not instrumentor.is_instrumented_by_opentelemetry
    assert get_instrumentation() is None
    for handle in (by_default.telemetry, bus.telemetry, coordinator.telemetry):
        assert handle.closed
    assert bus.middlewares == () and by_default.middlewares == ()
    assert not hand_made.closed and by_hand.middlewares
    assert InMemoryCommBus().telemetry is None  # built afterwards: none
    assert CommBusCoordinator(None, InMemoryCommBus(instrument=False)).telemetry is None
    asked = InMemoryCommBus(instrument=True)  # asking explicitly still works
    assert asked.telemetry is not None and not asked.telemetry.closed
    asked.telemetry.close()
    hand_made.close()


def test_a_bus_instrumented_by_hand_after_uninstrument_points_at_its_new_telemetry(
    instrumentor: CommBusInstrumentor, tel: Telemetry
) -> None:
    """Transports find a bus's telemetry as ``bus.telemetry`` (trace context of their own
    traffic): after ``uninstrument()`` it must not stay the closed handle."""
    from jeeves_control_tower.observability import instrument_bus, instrument_coordinator

    instrumentor.instrument(registry=tel.registry, flow=False)
    bus = InMemoryCommBus()
    coordinator = CommBusCoordinator(None, bus)
    instrumentor.uninstrument()
    assert bus.telemetry.closed and coordinator.telemetry.closed
    again = instrument_bus(bus, tracer_provider=tel.provider, registry=tel.registry, flow=False)
    coordinated = instrument_coordinator(
        coordinator, tracer_provider=tel.provider, registry=tel.registry, flow=False
    )
    assert bus.telemetry is again and coordinator.telemetry is coordinated
    with tel.provider.get_tracer("test").start_as_current_span("caller"):
        carrier = bus.telemetry.inject({})
        assert carrier is not None and "traceparent" in carrier
    coordinated.close()
    again.close()


def test_instrument_again_after_uninstrument(
    instrumentor: CommBusInstrumentor, tel: Telemetry
) -> None:
    instrumentor.instrument(registry=tel.registry, flow=False)
    instrumentor.uninstrument()
    instrumentor.instrument(tracer_provider=tel.provider, registry=tel.registry, flow=False)
    assert InMemoryCommBus().telemetry.tracer_provider is tel.provider


def test_unknown_options_are_refused(instrumentor: CommBusInstrumentor) -> None:
    with pytest.raises(TypeError, match="tracerprovider"):
        instrumentor.instrument(tracerprovider=None)
    assert not instrumentor.is_instrumented_by_opentelemetry


def test_dependencies_are_the_declared_ones_and_are_met_here() -> None:
    extras = PROJECT["optional-dependencies"]
    declared = {r.replace(" ", "") for r in INSTRUMENTS}
    assert declared == set(extras["instruments"])  # what opentelemetry-instrument checks
    assert declared <= set(extras["observability"])
    assert tuple(CommBusInstrumentor().instrumentation_dependencies()) == INSTRUMENTS
    assert get_dependency_conflicts(list(INSTRUMENTS)) is None
    assert any(r.startswith("opentelemetry-instrumentation>=") for r in extras["observability"])


def test_registered_under_both_entry_point_groups() -> None:
    groups = PROJECT["entry-points"]
    assert groups["opentelemetry_instrumentor"] == {
        "jeeves_control_tower": "jeeves_control_tower.instrumentation:CommBusInstrumentor"
    }
    assert groups[ENTRY_POINT_GROUP] == {
        "default": "jeeves_control_tower.instrumentation.builtin:DEFAULT"
    }
    # ... and the installed package says so (a bus built with defaults depends on it).
    stale = "the installed metadata lacks the entry points: install again (scripts/setup)"
    found = entry_points(group="opentelemetry_instrumentor", name="jeeves_control_tower")
    assert len(found) == 1, stale
    assert next(iter(found)).load() is CommBusInstrumentor
    default = entry_points(group=ENTRY_POINT_GROUP, name="default")
    assert len(default) == 1, stale
    assert next(iter(default)).load() is DEFAULT
