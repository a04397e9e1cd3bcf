"""Prometheus metrics: the contract table, samples per pattern and outcome, service gauges,
cardinality folding, exemplars and registry sharing."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.openmetrics.exposition import (
    generate_latest as _generate_openmetrics,
)

from jeeves_control_tower.ipc import (
    CommBusCoordinator,
    InMemoryCommBus,
    MiddlewareContext,
    RetryPolicy,
)
from jeeves_control_tower.observability import METRIC_NAMES, get_metrics, instrument_bus
from jeeves_control_tower.observability.aggregate import FAMILIES
from jeeves_control_tower.observability.metrics import CommBusMetrics
from jeeves_control_tower.types import Envelope

from .conftest import Telemetry
from .support import DoThing, GetState, Stored, echo, envelope, register, target


def generate_openmetrics(registry: CollectorRegistry) -> bytes:
    return _generate_openmetrics(registry)  # type: ignore[no-untyped-call,no-any-return]


#: The contract from issue 3 (plus the telemetry error counter).
CONTRACT = {
    "commbus_messages_total": ("counter", ("pattern", "message_type", "outcome")),
    "commbus_message_duration_seconds": ("histogram", ("pattern", "message_type")),
    "commbus_handler_errors_total": ("counter", ("pattern", "message_type", "error_type")),
    "commbus_timeouts_total": ("counter", ("pattern", "target")),
    "commbus_inflight_messages": ("gauge", ("pattern",)),
    "commbus_dispatch_total": ("counter", ("service", "method", "outcome")),
    "commbus_dispatch_duration_seconds": ("histogram", ("service", "method")),
    "commbus_dispatch_retries_total": ("counter", ("service", "method")),
    "commbus_service_load": ("gauge", ("service",)),
    "commbus_service_capacity": ("gauge", ("service",)),
    "commbus_service_queue_depth": ("gauge", ("service",)),
    "commbus_service_healthy": ("gauge", ("service",)),
    "commbus_services_registered": ("gauge", ("service_type",)),
    "commbus_telemetry_errors_total": ("counter", ("component",)),
}


def messages(tel: Telemetry, pattern: str, mtype: str, outcome: str) -> float | None:
    return tel.sample(
        "commbus_messages_total", pattern=pattern, message_type=mtype, outcome=outcome
    )


def test_every_family_is_declared_with_the_contract_labels() -> None:
    registry = CollectorRegistry()
    metrics = get_metrics(registry)
    assert set(METRIC_NAMES) == set(CONTRACT)
    text = generate_latest(registry).decode()
    for name, (kind, _) in CONTRACT.items():
        assert f"# HELP {name} " in text
        assert f"# TYPE {name} {kind}" in text
    collectors = {
        getattr(metrics, attr)._name: getattr(metrics, attr)
        for attr in vars(metrics)
        if hasattr(getattr(metrics, attr), "_labelnames")
    }
    for name, (_, labels) in CONTRACT.items():
        key = name.removesuffix("_total")
        # the counters and histograms the aggregate collector exposes declare their labels
        # in its table; the rest are prometheus_client collectors
        declared = FAMILIES[key][2] if key in FAMILIES else tuple(collectors[key]._labelnames)
        assert declared == labels, name
    assert get_metrics(registry) is metrics


def test_a_bus_built_with_a_registry_registers_everything_at_once(tel: Telemetry) -> None:
    InMemoryCommBus(**tel.options)
    text = generate_latest(tel.registry).decode()
    assert all(f"# TYPE {name} " in text for name in CONTRACT)
    assert "commbus_messages_total{" not in text  # no samples before the first message


async def test_publish_send_query_samples(
    instrumented_bus: InMemoryCommBus, tel: Telemetry
) -> None:
    instrumented_bus.subscribe("Stored", lambda e: None)
    instrumented_bus.register_handler("DoThing", lambda c: None)
    instrumented_bus.register_handler("GetState", lambda q: 1)
    for _ in range(3):
        await instrumented_bus.publish(Stored())
    await instrumented_bus.send(DoThing())
    await instrumented_bus.query(GetState())
    assert messages(tel, "publish", "Stored", "ok") == 3
    assert messages(tel, "send", "DoThing", "ok") == 1
    assert messages(tel, "query", "GetState", "ok") == 1
    count = "commbus_message_duration_seconds_count"
    assert tel.sample(count, pattern="publish", message_type="Stored") == 3
    assert tel.sample(count, pattern="query", message_type="GetState") == 1
    total = tel.sample(
        "commbus_message_duration_seconds_sum", pattern="publish", message_type="Stored"
    )
    assert total is not None and 0 < total < 1
    for pattern in ("publish", "send", "query"):
        assert tel.sample("commbus_inflight_messages", pattern=pattern) == 0


async def test_error_outcomes_and_handler_errors(
    instrumented_bus: InMemoryCommBus, tel: Telemetry
) -> None:
    def bad(e: Any) -> None:
        raise ValueError("x")

    instrumented_bus.subscribe("Stored", bad)
    instrumented_bus.subscribe("Stored", bad)
    instrumented_bus.subscribe("Stored", lambda e: None)
    instrumented_bus.register_handler("DoThing", bad)
    await instrumented_bus.publish(Stored())
    await instrumented_bus.send(DoThing())
    with pytest.raises(ValueError):
        await instrumented_bus.query(type("Q", (), {"message_type": "DoThing"})())
    assert messages(tel, "publish", "Stored", "error") == 1
    assert messages(tel, "send", "DoThing", "error") == 1
    assert messages(tel, "query", "DoThing", "error") == 1
    errors = "commbus_handler_errors_total"
    assert (
        tel.sample(errors, pattern="publish", message_type="Stored", error_type="ValueError") == 2
    )
    assert tel.sample(errors, pattern="send", message_type="DoThing", error_type="ValueError") == 1


async def test_no_handler_aborted_and_timeout(
    instrumented_bus: InMemoryCommBus, tel: Telemetry
) -> None:
    await instrumented_bus.publish(Stored())
    await instrumented_bus.send(DoThing())
    with pytest.raises(ValueError):
        await instrumented_bus.query(GetState())
    assert messages(tel, "publish", "Stored", "no_handler") == 1
    assert messages(tel, "send", "DoThing", "no_handler") == 1
    assert messages(tel, "query", "GetState", "no_handler") == 1

    async def slow(q: GetState) -> None:
        await asyncio.sleep(5)

    instrumented_bus.register_handler("GetState", slow)
    with pytest.raises(TimeoutError):
        await instrumented_bus.query(GetState(), timeout=0.01)
    assert messages(tel, "query", "GetState", "timeout") == 1
    assert tel.sample("commbus_timeouts_total", pattern="query", target="GetState") == 1
    # a timeout is not a handler error
    assert (
        tel.sample(
            "commbus_handler_errors_total",
            pattern="query",
            message_type="GetState",
            error_type="timeout",
        )
        is None
    )

    class Abort:
        def before(self, ctx: MiddlewareContext, message: Any) -> Any:
            return None if ctx.pattern == "send" else message

    instrumented_bus.add_middleware(Abort())
    await instrumented_bus.send(DoThing())
    assert messages(tel, "send", "DoThing", "aborted") == 1


@pytest.mark.parametrize("pattern", ["publish", "send", "query"])
async def test_a_cancelled_caller_is_its_own_outcome(
    instrumented_bus: InMemoryCommBus, tel: Telemetry, pattern: str
) -> None:
    inside = asyncio.Event()

    async def handler(_: Any) -> None:
        inside.set()
        await asyncio.sleep(5)

    message: Any = {"publish": Stored(), "send": DoThing(), "query": GetState()}[pattern]
    name = type(message).__name__
    if pattern == "publish":
        instrumented_bus.subscribe(name, handler)
    else:
        instrumented_bus.register_handler(name, handler)
    task = asyncio.ensure_future(getattr(instrumented_bus, pattern)(message))
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert messages(tel, pattern, name, "cancelled") == 1
    assert messages(tel, pattern, name, "error") is None
    assert tel.sample("commbus_inflight_messages", pattern=pattern) == 0
    span = tel.span(f"{pattern} {name}")
    assert span.attributes is not None
    assert span.attributes["jeeves.message.outcome"] == "cancelled"
    assert span.attributes["error.type"] == "cancelled"
    assert [r["outcome"] for r in tel.flow.flow()["records"]] == ["cancelled"]


async def test_inflight_while_a_handler_runs(
    instrumented_bus: InMemoryCommBus, tel: Telemetry
) -> None:
    gate = asyncio.Event()
    inside = asyncio.Event()

    async def handler(q: GetState) -> int:
        inside.set()
        await gate.wait()
        return 1

    instrumented_bus.register_handler("GetState", handler)
    task = asyncio.ensure_future(instrumented_bus.query(GetState()))
    await inside.wait()
    assert tel.sample("commbus_inflight_messages", pattern="query") == 1
    gate.set()
    await task
    assert tel.sample("commbus_inflight_messages", pattern="query") == 0


def dispatches(tel: Telemetry, outcome: str, service: str = "svc") -> float | None:
    return tel.sample("commbus_dispatch_total", service=service, method="run", outcome=outcome)


async def test_dispatch_outcomes_retries_and_timeouts(tel: Telemetry) -> None:
    coordinator = CommBusCoordinator(
        tel.logger,
        InMemoryCommBus(instrument=False),
        max_queue=0,
        retry_policy=RetryPolicy(initial_delay=0.001, jitter_floor=1.0),
        **tel.options,
    )

    async def handler(e: Envelope) -> Envelope:
        mode = e.metadata.get("mode")
        if mode == "flaky" and len(e.processing_history) == 0:
            raise ConnectionError()  # the first attempt fails, the retry works
        if mode == "broken":
            raise KeyError()
        if mode == "slow":
            await asyncio.sleep(5)
        if mode == "hang":
            await asyncio.Event().wait()
        return e

    def env(mode: str) -> Envelope:
        e = envelope()
        e.metadata["mode"] = mode
        return e

    register(coordinator, handler=handler, max_concurrent=1)
    register(coordinator, "idle")
    register(coordinator, "sick")
    coordinator.set_service_health("sick", False)

    await coordinator.dispatch(target(), env("ok"))
    await coordinator.dispatch(target(), env("flaky"))
    await coordinator.dispatch(target(max_retries=1), env("broken"))
    await coordinator.dispatch(target(timeout_seconds=0.02), env("slow"))
    await coordinator.dispatch(target("ghost"), env("ok"))
    await coordinator.dispatch(target("sick"), env("ok"))
    await coordinator.dispatch(target("idle"), env("ok"))
    hung = asyncio.ensure_future(coordinator.dispatch(target(), env("hang")))
    await asyncio.sleep(0.01)
    assert tel.sample("commbus_inflight_messages", pattern="dispatch") == 1
    await coordinator.dispatch(target(), env("ok"))  # full, max_queue=0
    hung.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hung

    assert dispatches(tel, "ok") == 2
    assert dispatches(tel, "error") == 1
    assert dispatches(tel, "timeout") == 1
    assert dispatches(tel, "overloaded") == 1
    assert dispatches(tel, "cancelled") == 1
    assert dispatches(tel, "unknown_service", "ghost") == 1
    assert dispatches(tel, "unhealthy", "sick") == 1
    assert dispatches(tel, "no_handler", "idle") == 1
    assert tel.sample("commbus_dispatch_retries_total", service="svc", method="run") == 2
    assert tel.sample("commbus_timeouts_total", pattern="dispatch", target="svc") == 1
    assert tel.sample("commbus_dispatch_duration_seconds_count", service="svc", method="run") == 6
    assert tel.sample("commbus_inflight_messages", pattern="dispatch") == 0


async def test_service_gauges_follow_the_registry(
    instrumented_coordinator: CommBusCoordinator, tel: Telemetry
) -> None:
    gate = asyncio.Event()

    async def blocked(e: Envelope) -> Envelope:
        await gate.wait()
        return e

    register(instrumented_coordinator, handler=blocked, max_concurrent=2, service_type="flow")
    register(instrumented_coordinator, "other_svc", service_type="flow")
    register(instrumented_coordinator, "w", service_type="worker")
    assert tel.sample("commbus_services_registered", service_type="flow") == 2
    assert tel.sample("commbus_services_registered", service_type="worker") == 1
    assert tel.sample("commbus_service_capacity", service="svc") == 2
    assert tel.sample("commbus_service_healthy", service="svc") == 1
    tasks = [
        asyncio.ensure_future(instrumented_coordinator.dispatch(target(), envelope()))
        for _ in range(5)
    ]
    await asyncio.sleep(0.01)
    assert tel.sample("commbus_service_load", service="svc") == 2
    assert tel.sample("commbus_service_queue_depth", service="svc") == 3
    instrumented_coordinator.set_service_capacity("svc", 4)
    assert tel.sample("commbus_service_capacity", service="svc") == 4
    assert tel.sample("commbus_service_load", service="svc") == 4
    assert tel.sample("commbus_service_queue_depth", service="svc") == 1
    gate.set()
    await asyncio.gather(*tasks)
    assert tel.sample("commbus_service_load", service="svc") == 0
    assert tel.sample("commbus_service_queue_depth", service="svc") == 0
    instrumented_coordinator.set_service_health("svc", False)
    assert tel.sample("commbus_service_healthy", service="svc") == 0

    assert instrumented_coordinator.unregister_service("svc")
    for gauge in ("load", "capacity", "queue_depth", "healthy"):
        assert tel.sample(f"commbus_service_{gauge}", service="svc") is None
    assert tel.sample("commbus_service_load", service="w") == 0
    assert tel.sample("commbus_services_registered", service_type="flow") == 1
    register(instrumented_coordinator, service_type="flow")  # back again: gauges again
    assert tel.sample("commbus_service_capacity", service="svc") == 10
    assert tel.sample("commbus_services_registered", service_type="flow") == 2


async def test_label_cardinality_is_bounded(tel: Telemetry) -> None:
    registry = CollectorRegistry()
    bus = InMemoryCommBus(instrument=False)
    handle = instrument_bus(bus, registry=registry, max_label_values=3, tracing=False, flow=False)
    coordinator = CommBusCoordinator(tel.logger, bus)
    for i in range(10):
        bus.subscribe(f"T{i}", lambda e: None)
        await bus.publish(type("M", (), {"message_type": f"T{i}"})())
        await coordinator.dispatch(target(f"s{i}"), envelope())
    sample = registry.get_sample_value
    kept = [f"T{i}" for i in range(3)]
    for name in kept:
        assert (
            sample(
                "commbus_messages_total",
                {"pattern": "publish", "message_type": name, "outcome": "ok"},
            )
            == 1
        )
    assert (
        sample(
            "commbus_messages_total",
            {"pattern": "publish", "message_type": "other", "outcome": "ok"},
        )
        == 7
    )
    assert (
        sample(
            "commbus_messages_total", {"pattern": "publish", "message_type": "T5", "outcome": "ok"}
        )
        is None
    )
    assert (
        sample(
            "commbus_dispatch_total",
            {"service": "other", "method": "run", "outcome": "unknown_service"},
        )
        == 7
    )
    assert handle.metrics is not None
    assert len(handle.metrics.message_types) == 3 and len(handle.metrics.services) == 3
    text = generate_latest(registry).decode()
    assert len(set(re.findall(r'message_type="([^"]+)"', text))) == 4


async def test_default_label_limit_is_in_the_hundreds() -> None:
    metrics = CommBusMetrics(CollectorRegistry())
    assert metrics.message_types.max_values >= 100
    for i in range(metrics.message_types.max_values):
        assert metrics.message_types(f"t{i}") == f"t{i}"
    assert metrics.message_types("one-too-many") == "other"
    assert metrics.message_types("x" * 500) == "other"


async def test_histograms_carry_trace_id_exemplars(
    instrumented_bus: InMemoryCommBus, instrumented_coordinator: CommBusCoordinator, tel: Telemetry
) -> None:
    instrumented_bus.subscribe("Stored", lambda e: None)
    register(instrumented_coordinator, handler=echo)
    await instrumented_bus.publish(Stored())
    await instrumented_coordinator.dispatch(target(), envelope())
    text = generate_openmetrics(tel.registry).decode()
    exemplars = dict(
        re.findall(
            r"^(commbus_\w+_duration_seconds)_bucket\{.*\} \d+\.\d+"
            r' # \{trace_id="([0-9a-f]{32})"\}',
            text,
            re.M,
        )
    )
    assert exemplars == {
        "commbus_message_duration_seconds": f"{tel.span('publish Stored').context.trace_id:032x}",
        "commbus_dispatch_duration_seconds": f"{tel.span('dispatch svc').context.trace_id:032x}",
    }


async def test_no_exemplar_without_a_recording_span(tel: Telemetry) -> None:
    bus = InMemoryCommBus(registry=tel.registry, tracing=False, flow=False)
    bus.subscribe("Stored", lambda e: None)
    await bus.publish(Stored())
    assert "trace_id" not in generate_openmetrics(tel.registry).decode()


async def test_buses_sharing_a_registry_share_collectors(tel: Telemetry) -> None:
    a = InMemoryCommBus(registry=tel.registry, tracing=False, flow=False)
    b = InMemoryCommBus(registry=tel.registry, tracing=False, flow=False)
    coordinator = CommBusCoordinator(tel.logger, b, registry=tel.registry)
    for bus in (a, b):
        bus.subscribe("Stored", lambda e: None)
        await bus.publish(Stored())
    assert messages(tel, "publish", "Stored", "ok") == 2
    assert a.telemetry.metrics is b.telemetry.metrics is coordinator.telemetry.metrics


def test_collectors_already_in_a_registry_are_reused() -> None:
    registry = CollectorRegistry()
    first = CommBusMetrics(registry)  # e.g. left by an earlier import of this module
    again = get_metrics(registry)
    assert again is not first and again.aggregate is first.aggregate is not None


def test_a_foreign_metric_under_a_contract_name_is_an_error() -> None:
    registry = CollectorRegistry()
    Counter("commbus_service_load", "not ours", registry=registry)
    with pytest.raises(ValueError):
        get_metrics(registry)
