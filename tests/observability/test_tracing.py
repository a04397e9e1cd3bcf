"""Bus spans: names, kinds, parents, attributes and status for publish, send and query."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from jeeves_control_tower.ipc import InMemoryCommBus, MiddlewareContext, NoHandlerError
from jeeves_control_tower.ipc.commbus import QueryAbortedError
from jeeves_control_tower.observability import TracingMiddleware, instrument_bus

from .conftest import Telemetry
from .support import DoThing, GetState, Stored

MID = "messaging.message.id"


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def assert_child(child: ReadableSpan, parent: ReadableSpan) -> None:
    assert parent_id(child) == parent.context.span_id
    assert child.context.trace_id == parent.context.trace_id


class Boom(Exception):
    pass


async def test_publish_producer_and_one_consumer_span_per_subscriber(
    instrumented_bus: InMemoryCommBus, tel: Telemetry
) -> None:
    async def a(e: Stored) -> None:
        await asyncio.sleep(0)

    def b(e: Stored) -> None:
        pass

    instrumented_bus.subscribe("Stored", a)
    instrumented_bus.subscribe("Stored", b)
    await instrumented_bus.publish(Stored())

    producer = tel.span("publish Stored")
    assert producer.kind is SpanKind.PRODUCER
    assert attrs(producer) == {
        "messaging.system": "jeeves.commbus",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": "Stored",
        MID: attrs(producer)[MID],
    }
    assert producer.status.status_code is StatusCode.UNSET
    assert producer.parent is None
    consumers = [s for s in tel.spans() if s.name == "process Stored"]
    assert len(consumers) == 2
    for span in consumers:
        assert span.kind is SpanKind.CONSUMER
        assert_child(span, producer)
        assert attrs(span)["messaging.operation.type"] == "process"
        assert attrs(span)["messaging.operation.name"] == "process"
        assert attrs(span)["messaging.destination.name"] == "Stored"
        assert attrs(span)[MID] == attrs(producer)[MID]
    names = sorted(str(attrs(s)["code.function.name"]) for s in consumers)
    assert names[0].endswith(".a") and names[1].endswith(".b")


async def test_send_spans(instrumented_bus: InMemoryCommBus, tel: Telemetry) -> None:
    instrumented_bus.register_handler("DoThing", lambda c: None)
    await instrumented_bus.send(DoThing())
    producer = tel.span("send DoThing")
    consumer = tel.span("process DoThing")
    assert (producer.kind, consumer.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER)
    assert attrs(producer)["messaging.operation.name"] == "send"
    assert_child(consumer, producer)


async def test_query_spans_are_producer_and_consumer(
    instrumented_bus: InMemoryCommBus, tel: Telemetry
) -> None:
    async def handle(q: GetState) -> str:
        await asyncio.sleep(0)
        return "v"

    instrumented_bus.register_handler("GetState", handle)
    assert await instrumented_bus.query(GetState()) == "v"
    client = tel.span("query GetState")
    server = tel.span("process GetState")
    # messaging conventions: a query is a message sent (PRODUCER) and processed (CONSUMER)
    assert (client.kind, server.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER)
    assert attrs(client)["messaging.operation.name"] == "query"
    assert_child(server, client)
    assert client.status.status_code is StatusCode.UNSET


async def test_message_id_attribute_of_the_message_wins(
    instrumented_bus: InMemoryCommBus, tel: Telemetry
) -> None:
    class WithId:
        message_id = "m-42"

    instrumented_bus.subscribe("WithId", lambda e: None)
    await instrumented_bus.publish(WithId())
    assert attrs(tel.span("publish WithId"))[MID] == "m-42"


async def test_failing_subscriber(instrumented_bus: InMemoryCommBus, tel: Telemetry) -> None:
    def bad(e: Stored) -> None:
        raise Boom("no")

    instrumented_bus.subscribe("Stored", bad)
    instrumented_bus.subscribe("Stored", lambda e: None)
    await instrumented_bus.publish(Stored())  # never raises to the publisher
    producer = tel.span("publish Stored")
    assert producer.status.status_code is StatusCode.ERROR
    assert attrs(producer)["error.type"] == f"{__name__}.Boom"
    assert attrs(producer)["jeeves.message.outcome"] == "error"
    failed, ok = sorted(
        (s for s in tel.spans() if s.name == "process Stored"),
        key=lambda s: s.status.status_code is StatusCode.ERROR,
        reverse=True,
    )
    assert failed.status.status_code is StatusCode.ERROR
    assert attrs(failed)["error.type"] == f"{__name__}.Boom"
    assert [e.name for e in failed.events] == ["exception"]
    assert ok.status.status_code is StatusCode.UNSET


async def test_two_failing_subscribers_make_an_exception_group(
    instrumented_bus: InMemoryCommBus, tel: Telemetry
) -> None:
    def bad(e: Stored) -> None:
        raise ValueError("x")

    instrumented_bus.subscribe("Stored", bad)
    instrumented_bus.subscribe("Stored", bad)
    await instrumented_bus.publish(Stored())
    assert attrs(tel.span("publish Stored"))["error.type"] == "ExceptionGroup"
    assert [attrs(s)["error.type"] for s in tel.spans() if s.name == "process Stored"] == [
        "ValueError",
        "ValueError",
    ]


async def test_query_timeout_is_an_error_of_type_timeout(
    instrumented_bus: InMemoryCommBus, tel: Telemetry
) -> None:
    async def slow(q: GetState) -> None:
        await asyncio.sleep(10)

    instrumented_bus.register_handler("GetState", slow)
    with pytest.raises(TimeoutError):
        await instrumented_bus.query(GetState(), timeout=0.01)
    for name in ("query GetState", "process GetState"):
        span = tel.span(name)
        assert span.status.status_code is StatusCode.ERROR
        assert attrs(span)["error.type"] == "timeout"
    assert attrs(tel.span("query GetState"))["jeeves.message.outcome"] == "timeout"


async def test_query_without_handler(instrumented_bus: InMemoryCommBus, tel: Telemetry) -> None:
    with pytest.raises(NoHandlerError):
        await instrumented_bus.query(GetState())
    span = tel.span("query GetState")
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["error.type"] == "jeeves_control_tower.ipc.commbus.NoHandlerError"
    assert attrs(span)["jeeves.message.outcome"] == "no_handler"
    assert len(tel.spans()) == 1


async def test_publish_without_subscribers_is_not_an_error(
    instrumented_bus: InMemoryCommBus, tel: Telemetry
) -> None:
    await instrumented_bus.publish(Stored())
    span = tel.span("publish Stored")
    assert span.status.status_code is StatusCode.UNSET
    assert attrs(span)["jeeves.message.outcome"] == "no_handler"


async def test_aborted_query_is_an_error(instrumented_bus: InMemoryCommBus, tel: Telemetry) -> None:
    class Abort:
        def before(self, ctx: MiddlewareContext, message: Any) -> Any:
            return None

    instrumented_bus.add_middleware(Abort())
    instrumented_bus.register_handler("GetState", lambda q: 1)
    with pytest.raises(QueryAbortedError):
        await instrumented_bus.query(GetState())
    span = tel.span("query GetState")
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["error.type"] == "aborted"
    await instrumented_bus.send(DoThing())
    assert tel.span("send DoThing").status.status_code is StatusCode.UNSET


async def test_handler_that_publishes_continues_the_trace(
    instrumented_bus: InMemoryCommBus, tel: Telemetry
) -> None:
    @__import__("dataclasses").dataclass
    class Inner:
        pass

    async def outer(e: Stored) -> None:
        await asyncio.sleep(0)  # suspended: the handler's context must survive the resume
        await instrumented_bus.publish(Inner())
        assert await instrumented_bus.query(GetState()) == 7

    instrumented_bus.subscribe("Stored", outer)
    instrumented_bus.subscribe("Inner", lambda e: None)
    instrumented_bus.register_handler("GetState", lambda q: 7)
    tracer = tel.provider.get_tracer("test")
    with tracer.start_as_current_span("request") as root:
        await instrumented_bus.publish(Stored())
        assert trace.get_current_span() is root
    request = tel.span("request")
    publish = tel.span("publish Stored")
    process = tel.span("process Stored")
    assert_child(publish, request)
    assert_child(process, publish)
    assert_child(tel.span("publish Inner"), process)
    assert_child(tel.span("process Inner"), tel.span("publish Inner"))
    assert_child(tel.span("query GetState"), process)
    assert {s.context.trace_id for s in tel.spans()} == {request.context.trace_id}


async def test_each_handler_sees_its_own_span(
    instrumented_bus: InMemoryCommBus, tel: Telemetry
) -> None:
    seen: dict[str, int] = {}

    def make(name: str) -> Any:
        async def handler(e: Stored) -> None:
            await asyncio.sleep(0)
            seen[name] = trace.get_current_span().get_span_context().span_id

        handler.__qualname__ = name
        return handler

    instrumented_bus.subscribe("Stored", make("h1"))
    instrumented_bus.subscribe("Stored", make("h2"))
    await instrumented_bus.publish(Stored())
    by_name = {
        str(attrs(s)["code.function.name"]).rsplit(".", 1)[-1]: s.context.span_id
        for s in tel.spans()
        if s.name == "process Stored"
    }
    assert seen == by_name


async def test_context_is_restored_after_errors_and_cancellation(
    instrumented_bus: InMemoryCommBus, tel: Telemetry
) -> None:
    started = asyncio.Event()

    async def hang(e: Stored) -> None:
        started.set()
        await asyncio.sleep(10)

    def bad(q: GetState) -> None:
        raise Boom()

    instrumented_bus.register_handler("GetState", bad)
    before = trace.get_current_span()
    with pytest.raises(Boom):
        await instrumented_bus.query(GetState())
    assert trace.get_current_span() is before

    instrumented_bus.subscribe("Stored", hang)

    async def publisher() -> None:
        await instrumented_bus.publish(Stored())

    task = asyncio.ensure_future(publisher())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    span = tel.span("publish Stored")
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["error.type"] == "cancelled"
    assert span.end_time is not None
    assert trace.get_current_span() is before


async def test_no_payload_unless_opted_in(tel: Telemetry) -> None:
    bus = InMemoryCommBus(instrument=False)
    bus.subscribe("Stored", lambda e: None)
    instrument_bus(bus, tracer_provider=tel.provider, registry=tel.registry, flow=False)
    await bus.publish(Stored())
    for span in tel.spans():
        assert not any("s3cr3t" in str(v) for v in attrs(span).values())

    tel.exporter.clear()
    loud = InMemoryCommBus(instrument=False)
    loud.subscribe("Stored", lambda e: None)
    instrument_bus(loud, tracer_provider=tel.provider, registry=tel.registry, record_payloads=True)
    await loud.publish(Stored())
    assert "s3cr3t" in str(attrs(tel.span("publish Stored"))["jeeves.message.payload"])


async def test_sampled_out_messages_record_nothing_but_propagate(tel: Telemetry) -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    bus = InMemoryCommBus(instrument=False)
    bus.add_middleware(TracingMiddleware(provider))
    contexts = []

    async def handler(e: Stored) -> None:
        contexts.append(trace.get_current_span().get_span_context())

    bus.subscribe("Stored", handler)
    await bus.publish(Stored())
    assert len(contexts) == 1
    assert contexts[0].is_valid and not contexts[0].trace_flags.sampled
    assert not trace.get_current_span().get_span_context().is_valid


async def test_noop_global_tracer_is_harmless() -> None:
    bus = InMemoryCommBus(instrument=False)
    bus.add_middleware(TracingMiddleware())
    bus.register_handler("GetState", lambda q: 3)
    assert await bus.query(GetState()) == 3
    assert not trace.get_current_span().get_span_context().is_valid


async def test_a_noop_provider_keeps_the_callers_span_current(tel: Telemetry) -> None:
    """No SDK behind the bus's tracer (OpenTelemetry's no-op tracer): the span current in
    the caller (made by another provider) stays current in the handler and afterwards."""
    bus = InMemoryCommBus(instrument=False)
    bus.add_middleware(TracingMiddleware(trace.NoOpTracerProvider()))
    seen: list[trace.SpanContext] = []

    def handler(q: GetState) -> int:
        seen.append(trace.get_current_span().get_span_context())
        return 3

    bus.register_handler("GetState", handler)
    with tel.provider.get_tracer("app").start_as_current_span("caller") as caller:
        assert await bus.query(GetState()) == 3
        assert trace.get_current_span() is caller
    assert seen == [caller.get_span_context()]
    assert [s.name for s in tel.spans()] == ["caller"]


class _Transport:
    system = "redis"

    def __init__(self) -> None:
        self.headers: list[dict[str, str] | None] = []

    async def publish(self, ctx: MiddlewareContext, message: Any) -> None:
        self.headers.append(dict(ctx.headers or {}))

    async def send(self, ctx: MiddlewareContext, message: Any) -> None:
        self.headers.append(dict(ctx.headers or {}))

    async def query(self, ctx: MiddlewareContext, message: Any, timeout: float) -> Any:
        self.headers.append(dict(ctx.headers or {}))
        return "remote"


async def test_outgoing_messages_carry_traceparent(
    instrumented_bus: InMemoryCommBus, tel: Telemetry
) -> None:
    transport = _Transport()
    instrumented_bus.attach_transport(transport)
    await instrumented_bus.publish(Stored())
    assert await instrumented_bus.query(GetState()) == "remote"
    for name, headers in zip(("publish Stored", "query GetState"), transport.headers, strict=True):
        span = tel.span(name)
        assert headers is not None
        _, trace_hex, span_hex, flags = headers["traceparent"].split("-")
        assert (trace_hex, span_hex) == (
            f"{span.context.trace_id:032x}",
            f"{span.context.span_id:016x}",
        )
        assert int(flags, 16) & 1  # sampled
        assert attrs(span)["messaging.system"] == "redis"  # the broker carrying it


async def test_incoming_messages_continue_the_remote_trace(
    instrumented_bus: InMemoryCommBus, tel: Telemetry
) -> None:
    instrumented_bus.subscribe("Stored", lambda e: None)
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    outcome, _ = await instrumented_bus.deliver_incoming(
        "publish", Stored(), headers={"traceparent": f"00-{trace_id}-{span_id}-01"}
    )
    assert outcome == "ok"
    receive = tel.span("receive Stored")
    assert receive.kind is SpanKind.CLIENT  # messaging conventions: receive is CLIENT
    assert attrs(receive)["messaging.operation.type"] == "receive"
    assert f"{receive.context.trace_id:032x}" == trace_id
    assert receive.parent is not None and receive.parent.is_remote
    assert f"{receive.parent.span_id:016x}" == span_id
    assert_child(tel.span("process Stored"), receive)


async def test_incoming_spans_name_the_transport_system(
    instrumented_bus: InMemoryCommBus, tel: Telemetry
) -> None:
    instrumented_bus.attach_transport(_Transport())
    instrumented_bus.subscribe("Stored", lambda e: None)
    await instrumented_bus.deliver_incoming("publish", Stored(), headers={})
    assert attrs(tel.span("receive Stored"))["messaging.system"] == "redis"
    assert attrs(tel.span("process Stored"))["messaging.system"] == "redis"
    instrumented_bus.detach_transport()
    await instrumented_bus.publish(Stored())
    assert attrs(tel.span("publish Stored"))["messaging.system"] == "jeeves.commbus"
