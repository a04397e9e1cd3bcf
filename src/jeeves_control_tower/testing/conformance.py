"""The transport conformance suite: the contract every transport of the bus keeps.

In the spirit of Watermill's shared pub/sub tests: any transport, this project's or a
third party's, runs the same tests against itself by subclassing
:class:`TransportConformance` in one of its own test modules and providing the
``transport_under_test`` fixture::

    import pytest
    from jeeves_control_tower.testing.conformance import (
        TransportConformance,
        TransportUnderTest,
    )

    class TestMyTransport(TransportConformance):
        @pytest.fixture
        def transport_under_test(self) -> TransportUnderTest:
            prefix = unique_prefix()  # one broker namespace per test

            async def connect(bus, registry):
                return await MyTransport.connect(bus, URL, prefix=prefix, registry=registry)

            return TransportUnderTest(MyTransport.features, connect)

The fixture may be a generator (sync or async, ``pytest_asyncio.fixture`` in strict mode)
that cleans the broker after the test; the suite closes every transport it connected
before that. Each test calls ``connect`` once per bus it wants "in another process".

What a transport guarantees is its :class:`~jeeves_control_tower.ipc.adapters.TransportFeatures`;
the tests read it and never the transport's name. A test about a guarantee the transport
does not declare is skipped, with the feature named in the reason; where a declared
value changes what is expected (a query's exception type, whether a command waits for a
handler) the test checks the declared behaviour, so a feature declared but not kept
fails. Needs ``pip install 'jeeves-control-tower[testing]'`` (pytest, pytest-asyncio and
the OpenTelemetry SDK for the trace test); the tests carry the ``asyncio`` mark, so they
run in pytest-asyncio's strict and auto modes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
import pytest_asyncio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from ..instrumentation.propagation import PropagationMiddleware
from ..ipc import (
    CommBusCoordinator,
    DynamicEvent,
    DynamicQuery,
    MiddlewareContext,
    NoHandlerError,
    TransportError,
)
from ..ipc.adapters import RemoteError
from ..logging import NullLogger
from .messages import Answer, Ask, DoWork, Happened, Level, NotRegistered, Other, Point, Rich
from .polling import eventually
from .target import IN_MEMORY, Connect, ConnectedTransport, Harness, TransportUnderTest

__all__ = [
    "IN_MEMORY",
    "Connect",
    "ConnectedTransport",
    "Harness",
    "TransportConformance",
    "TransportUnderTest",
]


def require(harness: Harness, feature: str, why: str) -> None:
    """Skip the test unless the transport declares ``feature`` (a ``TransportFeatures``
    field); ``why`` says what the test needs it for."""
    if not getattr(harness.features, feature):
        pytest.skip(f"transport {harness.features.name!r} does not declare {feature}: {why}")


class _Stamp:
    """Puts a header on outgoing messages and records what incoming ones carry."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.incoming: list[tuple[str, dict[str, str] | None]] = []

    def before(self, ctx: MiddlewareContext, message: Any) -> Any:
        if ctx.direction == "out":
            ctx.headers = {**(ctx.headers or {}), "x-tenant": "t1"}
            self.out.append(ctx.message_id)
        elif ctx.direction == "in":
            self.incoming.append((ctx.message_id, ctx.headers))
        return message


class TransportConformance:
    """The suite; subclass it and provide ``transport_under_test`` (see the module doc).

    Each test method takes ``harness`` (a :class:`Harness` over the user's
    :class:`TransportUnderTest`); the transports it connected are closed after the test.
    """

    pytestmark: ClassVar[Any] = [pytest.mark.asyncio]

    @pytest_asyncio.fixture
    async def harness(self, transport_under_test: TransportUnderTest) -> AsyncIterator[Harness]:
        # The subclass provides transport_under_test (pytest reports a missing fixture by
        # name; the base defines none, so that a sync or async override type-checks).
        if not isinstance(transport_under_test, TransportUnderTest):
            pytest.fail(
                f"{type(self).__name__}.transport_under_test must give a TransportUnderTest, "
                f"not {type(transport_under_test).__name__}"
            )
        harness = Harness(transport_under_test)
        try:
            yield harness
        finally:
            await harness.close()

    async def test_publish_reaches_every_subscriber_in_every_process(
        self, harness: Harness
    ) -> None:
        a, b = await harness.bus(), await harness.bus()
        seen: list[tuple[str, int]] = []
        a.subscribe("Happened", lambda e: seen.append(("a", e.n)))
        b.subscribe("Happened", lambda e: seen.append(("b1", e.n)))
        b.subscribe("Happened", lambda e: seen.append(("b2", e.n)))
        await harness.sync()

        await a.publish(Happened(1, "hi"))

        expected = {("a", 1), ("b1", 1), ("b2", 1)}
        if harness.features.publish_awaits_subscribers:
            assert set(seen) == expected
        await eventually(lambda: len(seen) == 3)
        await asyncio.sleep(0.05)
        assert sorted(seen) == sorted(expected)  # each exactly once

    async def test_publish_keeps_one_producers_order(self, harness: Harness) -> None:
        a, b = await harness.bus(), await harness.bus()
        seen: list[int] = []
        b.subscribe("Happened", lambda e: seen.append(e.n))
        await harness.sync()
        for i in range(200):
            await a.publish(Happened(i))
        await eventually(lambda: len(seen) == 200)
        assert seen == list(range(200))

    async def test_publish_without_subscribers_is_not_an_error(self, harness: Harness) -> None:
        a = await harness.bus()
        await a.publish(Other(1))

    async def test_unsubscribe_stops_delivery(self, harness: Harness) -> None:
        a, b = await harness.bus(), await harness.bus()
        seen: list[Any] = []
        marker: list[Any] = []
        off = b.subscribe("Other", seen.append)
        b.subscribe("Happened", marker.append)
        await harness.sync()
        off()
        await harness.sync()
        await a.publish(Other(1))
        await a.publish(Happened(2))
        await eventually(lambda: len(marker) == 1)
        await asyncio.sleep(0.1)
        assert seen == []

    async def test_send_reaches_exactly_one_handler_across_processes(
        self, harness: Harness
    ) -> None:
        a, b, c = await harness.bus(), await harness.bus(), await harness.bus()
        handled: list[tuple[str, int]] = []
        buses = {"a": a} if a is b else {"a": a, "b": b, "c": c}
        for name, bus in buses.items():

            def handle(cmd: DoWork, name: str = name) -> None:
                handled.append((name, cmd.n))

            bus.register_handler("DoWork", handle)
        await harness.sync()

        await asyncio.gather(*(a.send(DoWork(i)) for i in range(60)))

        await eventually(lambda: len(handled) == 60)
        await asyncio.sleep(0.1)
        assert sorted(n for _, n in handled) == list(range(60))

    async def test_send_waits_for_a_handler_when_durable(self, harness: Harness) -> None:
        a, b = await harness.bus(), await harness.bus()
        await a.send(DoWork(7))  # nobody handles DoWork yet
        handled: list[int] = []
        b.register_handler("DoWork", lambda cmd: handled.append(cmd.n))
        await harness.sync()
        if harness.features.send_waits_for_handler:
            await eventually(lambda: handled == [7])
        else:
            await asyncio.sleep(0.05)
            assert handled == []

    async def test_command_with_the_same_id_is_handled_once_per_process(
        self, harness: Harness
    ) -> None:
        a, b = await harness.bus(), await harness.bus()
        handled: list[int] = []
        b.register_handler("DoWork", lambda cmd: handled.append(cmd.n))
        await harness.sync()
        await a.send(DoWork(1, message_id="dup-1"))
        await a.send(DoWork(2, message_id="dup-1"))  # a redelivery, as the consumer sees it
        await a.send(DoWork(3, message_id="other"))
        await eventually(lambda: 3 in handled)
        await asyncio.sleep(0.05)
        if harness.features.cross_process:
            assert handled == [1, 3]  # the built-in dedupe dropped the second delivery
        else:
            assert handled == [1, 2, 3]  # in-process messages are not deduplicated

    async def test_query_returns_the_handlers_result(self, harness: Harness) -> None:
        a, b = await harness.bus(), await harness.bus()
        b.register_handler("Ask", lambda q: {"double": q.n * 2})
        await harness.sync()
        assert await a.query(Ask(21)) == {"double": 42}

    async def test_query_result_may_be_a_registered_message(self, harness: Harness) -> None:
        a, b = await harness.bus(), await harness.bus()

        async def answer(q: Rich) -> Answer:
            await asyncio.sleep(0)
            return Answer(q.point.x + q.point.y + len(q.tags), q.level.value)

        b.register_handler("Rich", answer)
        await harness.sync()
        result = await a.query(Rich(Point(1, 2), Level.HIGH, ["t"], {"s": 0.5}))
        assert result == Answer(4, "high")

    async def test_query_reaches_exactly_one_handler(self, harness: Harness) -> None:
        a, b, c = await harness.bus(), await harness.bus(), await harness.bus()
        calls: list[str] = []
        buses = {"a": a} if a is b else {"b": b, "c": c}
        for name, bus in buses.items():

            def answer(q: Ask, name: str = name) -> str:
                calls.append(name)
                return name

            bus.register_handler("Ask", answer)
        await harness.sync()
        results = [await a.query(Ask(i)) for i in range(20)]
        assert len(calls) == 20
        assert set(results) <= set(buses)

    async def test_query_without_handler_raises_no_handler(self, harness: Harness) -> None:
        a = await harness.bus()
        await harness.sync()
        with pytest.raises(NoHandlerError):
            await a.query(Ask(1), timeout=2.0)
        with pytest.raises(NoHandlerError):
            await a.query(DynamicQuery("nobody.answers", {}), timeout=2.0)

    async def test_query_times_out(self, harness: Harness) -> None:
        a, b = await harness.bus(), await harness.bus()

        async def slow(q: Ask) -> int:
            await asyncio.sleep(q.sleep)
            return q.n

        b.register_handler("Ask", slow)
        await harness.sync()
        with pytest.raises(asyncio.TimeoutError):
            await a.query(Ask(1, sleep=2.0), timeout=0.2)
        assert await a.query(Ask(2), timeout=2.0) == 2  # the responder is still fine

    async def test_query_handler_error_reaches_the_caller(self, harness: Harness) -> None:
        a, b = await harness.bus(), await harness.bus()

        def fail(q: Ask) -> None:
            raise KeyError("boom")

        b.register_handler("Ask", fail)
        await harness.sync()
        expected: type[Exception] = (
            KeyError if harness.features.query_preserves_exception_type else RemoteError
        )
        with pytest.raises(expected) as info:
            await a.query(Ask(1))
        if isinstance(info.value, RemoteError):
            assert info.value.remote_type == "KeyError"
            assert "boom" in str(info.value)

    async def test_a_handler_raising_cancelled_error_stops_nothing(self, harness: Harness) -> None:
        # A handler that raises CancelledError itself (it awaited something that was
        # cancelled) is a failed delivery. In process the caller sees it, as with a plain
        # await; over a broker it is logged, and the consumer goes on with the next message.
        a, b = await harness.bus(), await harness.bus()
        events: list[int] = []
        commands: list[int] = []

        def on_event(e: Happened) -> None:
            if e.n == 1:
                raise asyncio.CancelledError
            events.append(e.n)

        def on_command(c: DoWork) -> None:
            if c.n == 1:
                raise asyncio.CancelledError
            commands.append(c.n)

        def on_query(q: Ask) -> int:
            if q.n == 1:
                raise asyncio.CancelledError
            return q.n

        b.subscribe("Happened", on_event)
        b.register_handler("DoWork", on_command)
        b.register_handler("Ask", on_query)
        await harness.sync()
        for i in range(4):
            with contextlib.suppress(asyncio.CancelledError):
                await a.publish(Happened(i))
            with contextlib.suppress(asyncio.CancelledError):
                await a.send(DoWork(i))
        await eventually(lambda: events == [0, 2, 3] and commands == [0, 2, 3])
        with pytest.raises(
            asyncio.CancelledError if not harness.features.cross_process else RemoteError
        ):
            await a.query(Ask(1), timeout=5.0)
        assert await a.query(Ask(2), timeout=5.0) == 2

    async def test_dynamic_events_and_queries_round_trip(self, harness: Harness) -> None:
        a, b = await harness.bus(), await harness.bus()
        seen: list[DynamicEvent] = []
        b.subscribe("order.created", seen.append)
        b.register_handler("order.total", lambda q: sum(q.payload["items"]))
        await harness.sync()
        coordinator = CommBusCoordinator(NullLogger(), a, instrument=False)
        await coordinator.broadcast("order.created", {"id": "o1", "n": [1, 2]})
        await eventually(lambda: len(seen) == 1)
        assert seen[0].message_type == "order.created"
        assert seen[0].payload == {"id": "o1", "n": [1, 2]}
        assert await a.query(DynamicQuery("order.total", {"items": [1, 2, 3]})) == 6

    async def test_message_id_and_headers_cross_the_wire(self, harness: Harness) -> None:
        require(harness, "cross_process", "no wire: in-process messages have no headers")
        a, b = await harness.bus(), await harness.bus()
        stamp_a, stamp_b = _Stamp(), _Stamp()
        a.add_middleware(stamp_a)
        b.add_middleware(stamp_b)
        b.subscribe("Happened", lambda e: None)
        b.register_handler("DoWork", lambda c: None)
        b.register_handler("Ask", lambda q: q.n)
        await harness.sync()
        await a.publish(Happened(1))
        await a.send(DoWork(1))
        assert await a.query(Ask(5)) == 5
        await eventually(lambda: len(stamp_b.incoming) == 3)
        assert sorted(mid for mid, _ in stamp_b.incoming) == sorted(stamp_a.out)
        assert all(h is not None and h["x-tenant"] == "t1" for _, h in stamp_b.incoming)

    async def test_trace_context_crosses_the_wire(self, harness: Harness) -> None:
        # The telemetry writes and reads the trace context (here only its propagation, the
        # buses being uninstrumented); the transport must carry it both ways.
        provider = TracerProvider()
        tracer = provider.get_tracer("conformance")
        a, b = await harness.bus(), await harness.bus()
        for bus in {id(a): a, id(b): b}.values():  # one bus when the transport shares it
            bus.add_middleware(PropagationMiddleware())
        seen: list[int] = []
        b.register_handler(
            "Ask", lambda q: seen.append(trace.get_current_span().get_span_context().trace_id)
        )
        await harness.sync()
        with tracer.start_as_current_span("caller") as span:
            await a.query(Ask(1))
        assert seen == [span.get_span_context().trace_id]
        provider.shutdown()

    async def test_unregistered_message_class_fails_loudly(self, harness: Harness) -> None:
        a = await harness.bus()
        if not harness.features.cross_process:
            await a.publish(NotRegistered(1))  # in-process: any object is a message
            return
        with pytest.raises(TransportError, match="not registered"):
            await a.publish(NotRegistered(1))
        with pytest.raises(TransportError, match="not registered"):
            await a.send(NotRegistered(1))
