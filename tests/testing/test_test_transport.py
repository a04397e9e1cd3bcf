"""TestTransport: handlers run in process, through the wire codec, and are recorded.

(The conformance suite runs against it too: tests/conformance.)
"""

from __future__ import annotations

import asyncio

import pytest

from jeeves_control_tower.ipc import DynamicEvent, InMemoryCommBus, NoHandlerError, TransportError
from jeeves_control_tower.ipc.adapters import RemoteError
from jeeves_control_tower.testing import TestBroker, TestTransport, eventually
from jeeves_control_tower.testing.messages import (
    REGISTRY,
    Answer,
    Ask,
    DoWork,
    Happened,
    Level,
    NotRegistered,
    Point,
    Rich,
)


def new_bus() -> InMemoryCommBus:
    return InMemoryCommBus(query_timeout=5.0, instrument=False)


@pytest.fixture
def broker() -> TestBroker:
    return TestBroker()


async def test_handlers_have_run_when_the_call_returns() -> None:
    bus = new_bus()
    events: list[int] = []
    commands: list[int] = []
    bus.subscribe("Happened", lambda e: events.append(e.n))
    bus.register_handler("DoWork", lambda c: commands.append(c.n))
    bus.register_handler("Ask", lambda q: q.n * 2)
    async with TestTransport(bus, registry=REGISTRY) as transport:
        await bus.publish(Happened(1))
        assert events == [1]
        await bus.send(DoWork(2))
        assert commands == [2]
        assert await bus.query(Ask(3)) == 6
    assert transport.published() == [Happened(1)]
    assert transport.sent() == [DoWork(2)]
    assert transport.queried() == [Ask(3)]


async def test_records_are_what_a_receiver_decodes() -> None:
    bus = new_bus()
    bus.register_handler("Rich", lambda q: Answer(q.point.x, q.level.value))
    sent = Rich(Point(1, 2), Level.HIGH, ["t"], {"s": 0.5})
    async with TestTransport(bus, registry=REGISTRY) as transport:
        assert await bus.query(sent) == Answer(1, "high")
    [record] = transport.broker.records
    assert record.message == sent
    assert record.message is not sent  # decoded from the frame, not the caller's object
    assert isinstance(record.message.point, Point)
    assert record.pattern == "query"
    assert record.message_type == "Rich"
    assert record.message_id


async def test_records_filter_by_class_and_by_type_name() -> None:
    bus = new_bus()
    async with TestTransport(bus, registry=REGISTRY) as transport:
        await bus.publish(Happened(1))
        await bus.publish(DynamicEvent("order.created", {"id": "o1"}))
        await bus.publish(Happened(2))
        assert transport.published(Happened) == [Happened(1), Happened(2)]
        [dynamic] = transport.published("order.created")
        assert dynamic.payload == {"id": "o1"}
        assert transport.published("Happened") == [Happened(1), Happened(2)]
        assert transport.sent(Happened) == []
        assert [r.pattern for r in transport.broker.records] == ["publish"] * 3


async def test_buses_on_one_broker_behave_like_processes(broker: TestBroker) -> None:
    a, b = new_bus(), new_bus()
    seen: list[tuple[str, int]] = []
    handled: list[tuple[str, int]] = []
    for name, bus in (("a", a), ("b", b)):

        def on_event(e: Happened, name: str = name) -> None:
            seen.append((name, e.n))

        def on_command(c: DoWork, name: str = name) -> None:
            handled.append((name, c.n))

        bus.subscribe("Happened", on_event)
        bus.register_handler("DoWork", on_command)
    async with (
        TestTransport(a, broker=broker, registry=REGISTRY) as ta,
        TestTransport(b, broker=broker, registry=REGISTRY) as tb,
    ):
        await a.publish(Happened(1))
        assert sorted(seen) == [("a", 1), ("b", 1)]  # every subscribing bus
        for i in range(4):
            await a.send(DoWork(i))
        assert sorted(n for _, n in handled) == [0, 1, 2, 3]  # each command once
        assert {name for name, _ in handled} == {"a", "b"}  # in turn
        assert ta.sent() == tb.sent() == [DoWork(i) for i in range(4)]  # the broker's record


async def test_a_command_waits_for_a_handler_and_keeps_its_order(broker: TestBroker) -> None:
    a, b = new_bus(), new_bus()
    handled: list[int] = []
    async with (
        TestTransport(a, broker=broker, registry=REGISTRY),
        TestTransport(b, broker=broker, registry=REGISTRY) as tb,
    ):
        for i in range(3):
            await a.send(DoWork(i))  # returns: nobody handles DoWork yet
        assert broker.waiting("DoWork") == 3
        b.register_handler("DoWork", lambda c: handled.append(c.n))
        await tb.sync()
        await eventually(lambda: len(handled) == 3)
        assert handled == [0, 1, 2]
        assert broker.waiting("DoWork") == 0
        await a.send(DoWork(3))
        assert handled == [0, 1, 2, 3]


async def test_errors_are_the_ones_a_broker_gives() -> None:
    bus = new_bus()

    def fail(q: Ask) -> None:
        raise KeyError("boom")

    bus.register_handler("Ask", fail)
    async with TestTransport(bus, registry=REGISTRY):
        with pytest.raises(RemoteError) as info:
            await bus.query(Ask(1))
        assert info.value.remote_type == "KeyError"
        with pytest.raises(NoHandlerError):
            await bus.query(DoWork(1))
        with pytest.raises(TransportError, match="not registered"):
            await bus.publish(NotRegistered(1))


async def test_a_slow_query_times_out() -> None:
    bus = new_bus()

    async def slow(q: Ask) -> int:
        await asyncio.sleep(q.sleep)
        return q.n

    bus.register_handler("Ask", slow)
    async with TestTransport(bus, registry=REGISTRY):
        with pytest.raises(TimeoutError):
            await bus.query(Ask(1, sleep=5.0), timeout=0.1)
        assert await bus.query(Ask(2), timeout=1.0) == 2


async def test_connect_attaches_and_close_detaches() -> None:
    bus = new_bus()
    seen: list[int] = []
    bus.subscribe("Happened", lambda e: seen.append(e.n))
    transport = await TestTransport.connect(bus, registry=REGISTRY)
    assert bus.transport is transport
    await bus.publish(Happened(1))
    await transport.close()
    assert bus.transport is None
    await bus.publish(Happened(2))  # in process again: not recorded
    assert seen == [1, 2]
    assert transport.published() == [Happened(1)]
