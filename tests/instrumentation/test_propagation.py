"""Trace-context propagation in one place: the configured propagator's headers out, the
producer's context current in; the transports only carry headers. Messages cross a wire
(TestTransport: the same codec and frames as a broker, in memory)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanContext

from jeeves_control_tower.instrumentation import propagation
from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus, RetryPolicy
from jeeves_control_tower.ipc.adapters.services import RemoteServices
from jeeves_control_tower.logging import NullLogger
from jeeves_control_tower.testing import TestBroker, TestTransport, eventually
from jeeves_control_tower.testing.messages import REGISTRY, Ask, Happened
from jeeves_control_tower.types import DispatchTarget, Envelope, ServiceDescriptor
from tests.observability.conftest import Telemetry
from tests.observability.support import envelope

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
CALLER = {"traceparent": f"00-{TRACE}-{SPAN}-01", "tracestate": "vendor=abc"}


@pytest.fixture
def tel() -> Iterator[Telemetry]:
    t = Telemetry()
    yield t
    t.provider.shutdown()


def current() -> SpanContext:
    return trace.get_current_span().get_span_context()


def test_attach_makes_the_carried_context_current_and_carrier_gives_it_back() -> None:
    assert propagation.carrier() == {}  # nothing current: nothing to propagate
    assert propagation.attach(None) is None and propagation.attach({}) is None
    assert propagation.attach({"unrelated": "x"}) is None
    token = propagation.attach(CALLER)
    try:
        assert format(current().trace_id, "032x") == TRACE
        assert current().trace_flags.sampled and current().trace_state.get("vendor") == "abc"
        assert propagation.carrier() == CALLER
        assert propagation.inject_into({"k": "v"}) == {"k": "v", **CALLER}
        headers = {"k": "v"}
        assert propagation.inject_into(headers) is not headers  # never the caller's dict
    finally:
        propagation.detach(token)
    assert not current().is_valid
    assert propagation.inject_into(None) is None  # nothing to add: stays None


def test_inject_and_extract_are_opentelemetrys_own() -> None:
    from opentelemetry import propagate

    assert propagation.inject is propagate.inject
    assert propagation.extract is propagate.extract


Seen = list[SpanContext]


class Isolated(TestTransport):
    """A TestTransport whose receiving side runs in a fresh context, as in another process:
    only what the frame carries crosses (the plain one runs handlers in the caller's)."""

    async def _publish_frame(self, message_type: str, data: bytes) -> None:
        self.broker.record("publish", self, data)
        for transport in self.broker.consumers("publish", message_type):
            handled = transport.inbound.handle_event(data, message_type)
            await asyncio.create_task(handled, context=contextvars.Context())

    async def _request(self, message_type: str, data: bytes, corr: str, timeout: float) -> bytes:
        self.broker.record("query", self, data)
        (transport,) = self.broker.consumers("query", message_type)
        handled = transport.inbound.handle_query(data, message_type, has_return_address=True)
        async with asyncio.timeout(timeout):
            _, _, reply = await asyncio.create_task(handled, context=contextvars.Context())
        assert reply is not None
        return reply


async def pair(**telemetry: Any) -> tuple[TestBroker, list[InMemoryCommBus], Seen]:
    """Two buses on one test broker; the second's handlers record the span context
    current when they run."""
    broker = TestBroker()
    buses = [InMemoryCommBus(**telemetry), InMemoryCommBus(**telemetry)]
    for bus in buses:
        await Isolated.connect(bus, broker=broker, registry=REGISTRY, dedupe=False)
    seen: Seen = []

    async def record(message: Any) -> Any:
        seen.append(current())
        return None

    buses[1].subscribe("Happened", record)
    buses[1].register_handler("Ask", record)
    for bus in buses:
        await bus.transport.sync()  # type: ignore[union-attr]
    return broker, buses, seen


async def under_caller(bus: InMemoryCommBus) -> None:
    token = otel_context.attach(propagation.extract(CALLER))
    try:
        await bus.publish(Happened(1))
        await bus.query(Ask(1))
    finally:
        otel_context.detach(token)


def carried(broker: TestBroker) -> list[dict[str, str] | None]:
    return [r.headers for r in broker.records]


async def close(buses: list[InMemoryCommBus]) -> None:
    for bus in buses:
        await bus.transport.close()  # type: ignore[union-attr]


async def test_with_tracing_off_the_context_still_crosses(tel: Telemetry) -> None:
    broker, buses, seen = await pair(registry=tel.registry, tracing=False, flow=False)
    await under_caller(buses[0])
    assert carried(broker) == [CALLER, CALLER]  # no span of ours in between
    assert len(seen) == 2
    for ctx in seen:  # the caller's context, as it was, current in the handlers
        assert format(ctx.trace_id, "032x") == TRACE and format(ctx.span_id, "016x") == SPAN
        assert ctx.trace_flags.sampled and ctx.trace_state.get("vendor") == "abc"
    await close(buses)


async def test_with_tracing_on_the_handler_runs_under_the_producers_spans(
    tel: Telemetry,
) -> None:
    broker, buses, seen = await pair(
        tracer_provider=tel.provider, registry=tel.registry, flow=False
    )
    await under_caller(buses[0])
    spans = {s.name: s for s in tel.spans()}
    assert {"publish Happened", "receive Happened", "query Ask", "receive Ask"} <= set(spans)
    for headers, producer in zip(carried(broker), ("publish Happened", "query Ask"), strict=True):
        assert headers is not None  # the producer span's context on the wire
        assert headers["traceparent"] == f"00-{TRACE}-{spans[producer].context.span_id:016x}-01"
        assert headers["tracestate"] == "vendor=abc"
    for ctx in seen:  # the handlers run under this trace, in the other "process"
        assert format(ctx.trace_id, "032x") == TRACE
    ids = {s.context.span_id for s in spans.values()} | {int(SPAN, 16)}
    for s in spans.values():
        assert format(s.context.trace_id, "032x") == TRACE
        assert s.parent is not None and s.parent.span_id in ids
    await close(buses)


async def test_without_telemetry_nothing_propagates() -> None:
    """No telemetry on the bus, no trace context on the wire and none taken from it: the
    transports only move the headers the telemetry writes."""
    broker, buses, seen = await pair(instrument=False)
    await under_caller(buses[0])
    assert carried(broker) == [None, None]
    outcome = await asyncio.create_task(
        buses[1].deliver_incoming("publish", Happened(2), headers=CALLER),
        context=contextvars.Context(),
    )
    assert outcome == ("ok", None)
    assert len(seen) == 3 and not any(ctx.is_valid for ctx in seen)
    await close(buses)


@pytest.fixture
def broker() -> TestBroker:
    return TestBroker()


@pytest.fixture
async def nodes(tel: Telemetry, broker: TestBroker) -> AsyncIterator[Callable[[], Any]]:
    made: list[tuple[Isolated, RemoteServices]] = []

    async def make() -> tuple[CommBusCoordinator, RemoteServices]:
        bus = InMemoryCommBus(tracer_provider=tel.provider, registry=tel.registry, flow=False)
        transport = await Isolated.connect(bus, broker=broker, registry=REGISTRY)
        coordinator = CommBusCoordinator(
            NullLogger(), bus, retry_policy=RetryPolicy(initial_delay=0.001, max_delay=0.01)
        )
        services = await RemoteServices(coordinator, transport, interval=0.05).start()
        made.append((transport, services))
        return coordinator, services

    yield make
    for transport, services in made:
        await services.close()
        await transport.close()


async def test_a_remote_dispatch_continues_the_callers_trace(
    tel: Telemetry, nodes: Callable[[], Any], broker: TestBroker
) -> None:
    """Remote dispatch travels as the transports' own query (outside the chain): the
    bus's telemetry handle injects on one side and attaches on the other."""
    a, b = await nodes(), await nodes()

    async def served(env: Envelope) -> Envelope:
        return env

    b[0].register_service(ServiceDescriptor("svc", "worker"))
    b[0].register_handler("svc", served)
    await b[1].announce()
    await eventually(lambda: a[0].get_service("svc") is not None)
    token = otel_context.attach(propagation.extract(CALLER))
    try:
        result = await a[0].dispatch(DispatchTarget("svc", "run", timeout_seconds=5), envelope())
    finally:
        otel_context.detach(token)
    assert not result.terminated
    (frame,) = [r for r in broker.records if r.message_type == "jeeves.dispatch.svc"]
    assert frame.headers is not None and TRACE in frame.headers["traceparent"]
    dispatches = [s for s in tel.spans() if s.name == "dispatch svc"]
    assert len(dispatches) == 2  # the caller's and the serving process's
    ids = {s.context.span_id for s in tel.spans()}
    for s in dispatches:
        assert format(s.context.trace_id, "032x") == TRACE
    served_side = [s for s in dispatches if s.parent is not None and s.parent.span_id in ids]
    assert len(served_side) == 1  # its parent: a span of the caller's process
