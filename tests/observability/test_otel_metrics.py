"""OpenTelemetry messaging metrics: exact counts and attributes per pattern, outcome and
dispatch, through an injected or the global ``MeterProvider``; nothing and no cost without
one; a failing instrument is counted, never raised."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.metrics import Counter, Meter, MeterProvider, NoOpCounter, NoOpMeter
from opentelemetry.metrics import NoOpMeterProvider as ApiNoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.util.types import Attributes

from jeeves_control_tower.ipc import (
    CommBusCoordinator,
    InMemoryCommBus,
    MiddlewareContext,
    RetryPolicy,
)
from jeeves_control_tower.observability.otel_metrics import (
    DURATION_BUCKETS,
    is_recording_provider,
)
from jeeves_control_tower.types import Envelope

from .conftest import Telemetry
from .support import DoThing, GetState, Stored, envelope, register, run_fresh_process, target

SENT = "messaging.client.sent.messages"
CONSUMED = "messaging.client.consumed.messages"
OPERATION = "messaging.client.operation.duration"
PROCESS = "messaging.process.duration"
Key = tuple[tuple[str, Any], ...]


class Meters:
    """An SDK provider with an in-memory reader; ``points(name)`` maps each attribute set
    (as a sorted tuple) to its data point's value (counter) or count (histogram)."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = SdkMeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)

    def metric(self, name: str) -> Any:
        data = self.reader.get_metrics_data()
        assert data is not None
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == name:
                        return m
        return None

    def points(self, name: str) -> dict[Key, float]:
        metric = self.metric(name)
        if metric is None:
            return {}
        out: dict[Key, float] = {}
        for p in metric.data.data_points:
            key = tuple(sorted(p.attributes.items()))
            out[key] = p.count if hasattr(p, "count") else p.value
        return out


def attrs(op: str, dest: str, error: str | None = None, system: str = "jeeves.commbus") -> Key:
    a: dict[str, str] = {
        "messaging.system": system,
        "messaging.operation.name": op,
        "messaging.operation.type": "process" if op == "process" else "send",
        "messaging.destination.name": dest,
    }
    if error is not None:
        a["error.type"] = error
    return tuple(sorted(a.items()))


@pytest.fixture
def meters() -> Iterator[Meters]:
    m = Meters()
    yield m
    m.provider.shutdown()


async def test_publish_send_query_counts_and_attributes(tel: Telemetry, meters: Meters) -> None:
    bus = InMemoryCommBus(logger=tel.logger, meter_provider=meters.provider, **tel.options)
    bus.subscribe("Stored", lambda e: None)
    bus.subscribe("Stored", lambda e: None)  # two handlers: still one message consumed
    bus.register_handler("DoThing", lambda c: None)
    bus.register_handler("GetState", lambda q: 1)
    for _ in range(3):
        await bus.publish(Stored())
    await bus.send(DoThing())
    assert await bus.query(GetState()) == 1

    produced = {
        attrs("publish", "Stored"): 3,
        attrs("send", "DoThing"): 1,
        attrs("query", "GetState"): 1,
    }
    consumed = {
        attrs("process", "Stored"): 3,
        attrs("process", "DoThing"): 1,
        attrs("process", "GetState"): 1,
    }
    assert meters.points(SENT) == produced
    assert meters.points(OPERATION) == produced
    assert meters.points(CONSUMED) == consumed
    assert meters.points(PROCESS) == consumed
    assert meters.metric(SENT).unit == meters.metric(CONSUMED).unit == "{message}"
    for name in (OPERATION, PROCESS):
        metric = meters.metric(name)
        assert metric.unit == "s"
        for point in metric.data.data_points:
            assert tuple(point.explicit_bounds) == DURATION_BUCKETS
            assert 0 < point.sum < 1
    # the Prometheus families keep counting as before
    labels = {"pattern": "publish", "message_type": "Stored", "outcome": "ok"}
    assert tel.sample("commbus_messages_total", **labels) == 3


async def test_failed_operations_carry_error_type(tel: Telemetry, meters: Meters) -> None:
    bus = InMemoryCommBus(logger=tel.logger, meter_provider=meters.provider, **tel.options)

    def bad(c: Any) -> None:
        raise ValueError("x")

    async def slow(q: Any) -> None:
        await asyncio.sleep(5)

    fanned = type("Fanned", (), {"message_type": "Fanned"})
    bus.subscribe("Fanned", bad)  # two subscribers failing: the publish's error is a group
    bus.subscribe("Fanned", bad)
    bus.subscribe("Fanned", lambda e: None)
    bus.register_handler("DoThing", bad)
    bus.register_handler("GetState", slow)
    await bus.publish(fanned())
    await bus.send(DoThing())
    with pytest.raises(TimeoutError):
        await bus.query(GetState(), timeout=0.01)
    await bus.publish(Stored())  # nobody subscribed

    assert meters.points(SENT) == {
        attrs("send", "DoThing", "ValueError"): 1,
        attrs("query", "GetState", "timeout"): 1,
        attrs("publish", "Stored", "no_handler"): 1,
        attrs("publish", "Fanned", "ExceptionGroup"): 1,
    }
    assert meters.points(OPERATION) == meters.points(SENT)
    # a message no handler received is not consumed
    assert meters.points(CONSUMED) == {
        attrs("process", "DoThing", "ValueError"): 1,
        attrs("process", "GetState", "timeout"): 1,
        attrs("process", "Fanned", "ExceptionGroup"): 1,
    }
    assert meters.points(PROCESS) == meters.points(CONSUMED)


async def test_dispatch_ok_error_timeout(tel: Telemetry, meters: Meters) -> None:
    bus = InMemoryCommBus(logger=tel.logger, meter_provider=meters.provider, **tel.options)
    # the coordinator inherits the bus's meter provider
    coordinator = CommBusCoordinator(
        tel.logger, bus, retry_policy=RetryPolicy(initial_delay=0.001, jitter_floor=1.0)
    )
    assert coordinator.telemetry.meter_provider is meters.provider

    async def handler(e: Envelope) -> Envelope:
        mode = e.metadata.get("mode")
        if mode == "broken":
            raise KeyError()
        if mode == "slow":
            await asyncio.sleep(5)
        return e

    def env(mode: str) -> Envelope:
        e = envelope()
        e.metadata["mode"] = mode
        return e

    register(coordinator, handler=handler)
    for _ in range(2):
        await coordinator.dispatch(target(), env("ok"))
    await coordinator.dispatch(target(max_retries=1), env("broken"))
    await coordinator.dispatch(target(timeout_seconds=0.02, max_retries=0), env("slow"))
    await coordinator.dispatch(target("ghost"), env("ok"))

    dispatched = {
        attrs("dispatch", "svc"): 2,
        attrs("dispatch", "svc", "KeyError"): 1,
        attrs("dispatch", "svc", "timeout"): 1,
        attrs("dispatch", "ghost", "unknown_service"): 1,
    }
    assert meters.points(SENT) == dispatched
    assert meters.points(OPERATION) == dispatched
    assert tel.sample("commbus_dispatch_total", service="svc", method="run", outcome="ok") == 2


class _Transport:
    """Carries nothing: every message produced on a bus with it attached goes "out"."""

    system = "redis"

    async def publish(self, ctx: MiddlewareContext, message: Any) -> None:
        pass

    async def send(self, ctx: MiddlewareContext, message: Any) -> None:
        pass

    async def query(self, ctx: MiddlewareContext, message: Any, timeout: float) -> Any:
        return "remote"


async def test_over_a_transport_out_is_sent_and_in_is_consumed(
    tel: Telemetry, meters: Meters
) -> None:
    bus = InMemoryCommBus(logger=tel.logger, meter_provider=meters.provider, **tel.options)
    bus.attach_transport(_Transport())
    bus.subscribe("Stored", lambda e: None)
    await bus.publish(Stored())  # goes out to the broker: sent, not consumed here
    assert await bus.query(GetState()) == "remote"
    outcome, _ = await bus.deliver_incoming("publish", Stored(), headers={})
    assert outcome == "ok"
    assert meters.points(SENT) == {
        attrs("publish", "Stored", system="redis"): 1,
        attrs("query", "GetState", system="redis"): 1,
    }
    assert meters.points(CONSUMED) == {attrs("process", "Stored", system="redis"): 1}
    assert meters.points(PROCESS) == meters.points(CONSUMED)


async def test_destinations_are_bounded_like_the_labels(tel: Telemetry, meters: Meters) -> None:
    bus = InMemoryCommBus(
        logger=tel.logger, meter_provider=meters.provider, max_label_values=2, **tel.options
    )
    for name in ("A", "B", "C", "D"):
        await bus.publish(type(name, (), {"message_type": name})())
    assert meters.points(SENT) == {
        attrs("publish", "A", "no_handler"): 1,
        attrs("publish", "B", "no_handler"): 1,
        attrs("publish", "other", "no_handler"): 2,
    }


class _Broken(NoOpCounter):
    def add(self, amount: int | float, attributes: Attributes = None, context: Any = None) -> None:
        raise RuntimeError("exporter on fire")


class _BrokenMeter(NoOpMeter):
    def create_counter(self, name: str, unit: str = "", description: str = "") -> Counter:
        return _Broken(name)


class _BrokenProvider(MeterProvider):
    def get_meter(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> Meter:
        return _BrokenMeter(name)


async def test_a_failing_instrument_is_counted_not_raised(tel: Telemetry) -> None:
    bus = InMemoryCommBus(logger=tel.logger, meter_provider=_BrokenProvider(), **tel.options)
    coordinator = CommBusCoordinator(tel.logger, bus)
    bus.register_handler("GetState", lambda q: 7)
    register(coordinator, handler=lambda e: asyncio.sleep(0, e))
    assert await bus.query(GetState()) == 7
    done = await coordinator.dispatch(target(), envelope())
    assert not done.terminated and not done.errors
    assert tel.sample("commbus_telemetry_errors_total", component="otel_metrics") == 2
    labels = {"pattern": "query", "message_type": "GetState", "outcome": "ok"}
    assert tel.sample("commbus_messages_total", **labels) == 1


class _RaisingProvider(MeterProvider):
    def get_meter(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> Meter:
        raise RuntimeError("no meter today")


async def test_a_raising_provider_breaks_neither_building_nor_messages(tel: Telemetry) -> None:
    bus = InMemoryCommBus(logger=tel.logger, meter_provider=_RaisingProvider(), **tel.options)
    bus.register_handler("DoThing", lambda c: None)
    await bus.send(DoThing())
    await bus.send(DoThing())  # looked again only a second later: one failure so far
    assert tel.sample("commbus_telemetry_errors_total", component="otel_metrics") == 1
    coordinator = CommBusCoordinator(
        tel.logger,
        InMemoryCommBus(instrument=False),
        meter_provider=_RaisingProvider(),
        **tel.options,
    )
    register(coordinator, handler=lambda e: asyncio.sleep(0, e))
    done = await coordinator.dispatch(target(), envelope())
    assert not done.terminated and not done.errors
    assert tel.sample("commbus_telemetry_errors_total", component="otel_metrics") == 2
    labels = {"pattern": "send", "message_type": "DoThing", "outcome": "ok"}
    assert tel.sample("commbus_messages_total", **labels) == 2


async def test_without_a_recording_provider_nothing_is_recorded(tel: Telemetry) -> None:
    noop = InMemoryCommBus(logger=tel.logger, meter_provider=ApiNoOpMeterProvider(), **tel.options)
    assert noop.telemetry.otel_metrics is None  # an injected no-op provider: not even a check
    assert not is_recording_provider(ApiNoOpMeterProvider())
    assert is_recording_provider(SdkMeterProvider(shutdown_on_exit=False))
    off = InMemoryCommBus(logger=tel.logger, metrics=False, tracer_provider=tel.provider)
    assert off.telemetry.otel_metrics is None
    bus = InMemoryCommBus(logger=tel.logger, **tel.options)  # the global provider: unset here
    bus.register_handler("DoThing", lambda c: None)
    await bus.send(DoThing())
    await noop.send(DoThing())
    assert bus.telemetry.otel_metrics.live is False
    assert tel.sample("commbus_telemetry_errors_total", component="otel_metrics") is None


_GLOBAL = """
import asyncio, json, time
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry
from jeeves_control_tower.ipc import InMemoryCommBus

class DoThing:
    pass

class Early:
    pass

def sent(reader):
    points = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == "messaging.client.sent.messages":
                    for p in m.data.data_points:
                        points[p.attributes["messaging.destination.name"]] = p.value
    return points

async def main():
    early = InMemoryCommBus(registry=CollectorRegistry(), tracing=False, flow=False)
    early.register_handler("Early", lambda c: None)
    await early.send(Early())  # no provider yet: not recorded
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    late = InMemoryCommBus(registry=CollectorRegistry(), tracing=False, flow=False)
    late.register_handler("DoThing", lambda c: None)
    for _ in range(3):
        await late.send(DoThing())
    # the early bus looks for the provider again within RECHECK_SECONDS
    after, deadline = 0, time.monotonic() + 30
    while "Early" not in sent(reader) and time.monotonic() < deadline:
        await early.send(Early())
        after += 1
        await asyncio.sleep(0.01)
    print(json.dumps({"points": sent(reader), "after": after}))

asyncio.run(main())
"""


def test_a_global_sdk_provider_is_used_when_none_is_injected() -> None:
    out = run_fresh_process(_GLOBAL, unset=("OTEL_PYTHON_METER_PROVIDER",))
    points = out["points"]
    assert points["DoThing"] == 3  # built after the provider was set: every message
    # built before: the message sent with no provider is not recorded; one sent after it
    # is, once the bus has looked again
    assert points["Early"] == 1
    assert out["after"] >= 1
