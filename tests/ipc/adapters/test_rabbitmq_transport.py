"""RabbitMQ-specific behaviour: hostile frames, redelivery, dead letters, no-responder,
priorities, credentials, failing fast."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import InMemoryCommBus, NoHandlerError, TransportError
from jeeves_control_tower.ipc.adapters.rabbitmq import RabbitMQTransport
from jeeves_control_tower.ipc.adapters.rabbitmq.names import priority_of, routing_key
from jeeves_control_tower.testing import eventually
from jeeves_control_tower.testing.messages import REGISTRY, Ask, DoWork, Happened
from tests import brokers
from tests.conformance.conftest import rabbitmq_cleanup
from tests.helpers import ListLogger

from .wire_counts import check_wire_counts

pytestmark = pytest.mark.rabbitmq


class _Raw:
    """A plain aio-pika client: publishes what a hostile or foreign process would."""

    def __init__(self, connection: Any, channel: Any) -> None:
        self.connection = connection
        self.channel = channel

    async def publish(self, destination: str, body: bytes, **props: Any) -> None:
        import aio_pika

        exchange, _, key = destination.partition("/")
        if key:  # an event: "{exchange}/{routing key}"
            target = await self.channel.get_exchange(exchange, ensure=False)
        else:
            target, key = self.channel.default_exchange, destination
        await target.publish(aio_pika.Message(body, **props), key)


@pytest.fixture
async def env() -> AsyncIterator[dict[str, Any]]:
    import aio_pika

    url = brokers.require(brokers.RABBITMQ_URL, "RabbitMQ")
    prefix = brokers.unique("jttest")
    connection = await aio_pika.connect(url)
    raw = _Raw(connection, await connection.channel())
    transports: list[RabbitMQTransport] = []
    reg = CollectorRegistry()

    async def connect(bus: InMemoryCommBus, **kw: Any) -> RabbitMQTransport:
        kw.setdefault("registry", REGISTRY)
        kw.setdefault("metrics_registry", reg)
        t = await RabbitMQTransport.connect(bus, url, prefix=prefix, **kw)
        transports.append(t)
        return t

    yield {"url": url, "prefix": prefix, "raw": raw, "connect": connect, "metrics": reg}
    for t in transports:
        await t.close()
    await connection.close()
    await rabbitmq_cleanup(url, set().union(*(t.topology.durable for t in transports)))


def test_routing_keys_never_hold_wildcards_or_overflow() -> None:
    assert routing_key("order.created") == "order.created"
    assert routing_key("a.*.b").startswith("h.") and routing_key("a.#") != routing_key("a.*")
    assert routing_key("x" * 300).startswith("h.") and len(routing_key("x" * 300)) < 100
    assert [priority_of(p) for p in ("realtime", "high", "normal", "low", "idle")] == [
        9, 7, 5, 3, 1,
    ]  # fmt: skip
    assert priority_of("bogus") is None and priority_of(3) is None


async def test_hostile_frames_are_rejected_counted_acked_and_never_stop_a_consumer(
    env: dict[str, Any],
) -> None:
    bus = InMemoryCommBus(instrument=False)
    t = await env["connect"](bus, logger=ListLogger())
    events: list[int] = []
    commands: list[int] = []
    bus.subscribe("Happened", lambda e: events.append(e.n))
    bus.register_handler("DoWork", lambda c: commands.append(c.n))
    bus.register_handler("Ask", lambda q: q.n)
    await t.sync()
    raw = env["raw"]
    junk = (b"\xff\x00garbage", b"[]", b"[" * 5000, b"{" + b" " * (2 << 20) + b"}")
    for body in junk:
        await raw.publish(t.destination("publish", "Happened"), body)
        await raw.publish(t.destination("send", "DoWork"), body)
    # A well-formed command of another type, in DoWork's queue: dead-lettered too.
    other = t.codec.encode(Ask(5), pattern="send", message_id="x1")
    await raw.publish(t.destination("send", "DoWork"), other)
    await bus.publish(Happened(1))
    await bus.send(DoWork(2))
    assert await bus.query(Ask(3)) == 3
    await eventually(lambda: events == [1] and commands == [2])
    metrics = env["metrics"]
    # 4 events + 5 commands, whatever the reason each was rejected for
    await eventually(lambda: _rejected(metrics) == 9)
    # Every rejected command was acknowledged into the dead letters, counted: none loops.
    await eventually(lambda: _dead(metrics) == 5)
    assert await t.dead_letter_depth() == 5


def _rejected(metrics: CollectorRegistry) -> float:
    return sum(
        sample.value
        for family in metrics.collect()
        if family.name == "commbus_wire_rejected"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("transport") == "rabbitmq"
    )


def _dead(metrics: CollectorRegistry) -> float:
    labels = {"transport": "rabbitmq", "message_type": "DoWork", "reason": "rejected"}
    return metrics.get_sample_value("commbus_dead_letters_total", labels) or 0


async def test_a_query_frame_that_cannot_be_read_gets_a_rejected_reply(
    env: dict[str, Any],
) -> None:
    bus = InMemoryCommBus(instrument=False)
    t = await env["connect"](bus)
    bus.register_handler("Ask", lambda q: q.n)
    await t.sync()
    raw = env["raw"]
    replies: asyncio.Queue[bytes] = asyncio.Queue()
    queue = await raw.channel.get_queue("amq.rabbitmq.reply-to", ensure=False)

    async def on_reply(message: Any) -> None:
        await replies.put(message.body)

    await queue.consume(on_reply, no_ack=True)
    await raw.publish(t.destination("query", "Ask"), b"not a frame", reply_to=queue.name)
    reply = await asyncio.wait_for(replies.get(), 5)
    assert b"rejected" in reply
    # Without a return address the query never runs, and is counted.
    await raw.publish(
        t.destination("query", "Ask"), t.codec.encode(Ask(1), pattern="query", message_id="q1")
    )
    labels = {"transport": "rabbitmq", "reason": "no_reply_to"}
    await eventually(
        lambda: env["metrics"].get_sample_value("commbus_wire_rejected_total", labels) == 1
    )


async def test_no_responder_is_detected_at_once(env: dict[str, Any]) -> None:
    bus = InMemoryCommBus(instrument=False)
    await env["connect"](bus)
    started = time.monotonic()
    with pytest.raises(NoHandlerError):
        await bus.query(Ask(1), timeout=10)
    assert time.monotonic() - started < 2  # the returned message, not the timeout


async def test_an_absurdly_long_timeout_neither_fails_nor_breaks_other_queries(
    env: dict[str, Any],
) -> None:
    """A timeout beyond RabbitMQ's longest message TTL (49.7 days) used to be sent as the
    query's expiration: a channel error that failed it and every query beside it."""
    asker, answerer = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)

    async def answer(q: Ask) -> int:
        await asyncio.sleep(0.1)
        return q.n

    answerer.register_handler("Ask", answer)
    await env["connect"](answerer)
    await env["connect"](asker)
    for timeout in (1e9, 1e12):
        beside = asyncio.create_task(asker.query(Ask(7), timeout=5))
        assert await asker.query(Ask(1), timeout=timeout) == 1
        assert await beside == 7


async def test_a_command_whose_consumer_dies_is_redelivered_then_dead_lettered(
    env: dict[str, Any],
) -> None:
    a = InMemoryCommBus(instrument=False)
    ta = await env["connect"](a, max_deliveries=2)
    await a.send(DoWork(1))  # nobody handles DoWork yet: it waits in its durable queue
    queue_name = ta.destination("send", "DoWork")
    for _ in range(2):  # a consumer takes it and dies before acknowledging, twice
        channel = await env["raw"].connection.channel()
        queue = await channel.declare_queue(
            queue_name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        message = await _get(queue)
        assert message is not None and b"DoWork" in message.body
        await channel.close()
    handled: list[int] = []
    a.register_handler("DoWork", lambda c: handled.append(c.n))
    await ta.sync()
    # Delivered a third time: over max_deliveries=2, so dead-lettered instead of run.
    await eventually(lambda: _dead_max(env["metrics"]) == 1)
    assert handled == []
    assert await ta.dead_letter_depth() == 1
    redelivered = env["metrics"].get_sample_value(
        "commbus_transport_redeliveries_total", {"transport": "rabbitmq"}
    )
    assert redelivered == 1
    await a.send(DoWork(2))
    await eventually(lambda: handled == [2])


def _dead_max(metrics: CollectorRegistry) -> float:
    labels = {"transport": "rabbitmq", "message_type": "DoWork", "reason": "max_deliveries"}
    return metrics.get_sample_value("commbus_dead_letters_total", labels) or 0


async def _get(queue: Any) -> Any:
    for _ in range(100):
        message = await queue.get(no_ack=False, fail=False)
        if message is not None:
            return message
        await asyncio.sleep(0.02)
    return None


async def test_an_unacknowledged_command_is_redelivered_to_another_process(
    env: dict[str, Any],
) -> None:
    a, b = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)
    started, release = asyncio.Event(), asyncio.Event()

    async def hang(cmd: DoWork) -> None:
        started.set()
        await release.wait()

    a.register_handler("DoWork", hang)
    ta = await env["connect"](a)
    await a.send(DoWork(1))
    await asyncio.wait_for(started.wait(), 5)
    await ta.connection.close()  # the process "dies" mid-command: no ack
    handled: list[int] = []
    b.register_handler("DoWork", lambda c: handled.append(c.n))
    await env["connect"](b)
    await eventually(lambda: handled == [1], timeout=10)
    release.set()


async def test_wire_messages_are_counted_per_direction_and_pattern(env: dict[str, Any]) -> None:
    await check_wire_counts(env, "rabbitmq")


async def test_a_burst_of_events_arrives_in_order_in_batch_frames(env: dict[str, Any]) -> None:
    a, b = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)
    seen: list[int] = []
    b.subscribe("Happened", lambda e: seen.append(e.n))
    await (await env["connect"](b)).sync()
    ta = await env["connect"](a)
    await asyncio.gather(*(a.publish(Happened(i)) for i in range(2000)))
    await ta.flush()
    await eventually(lambda: len(seen) == 2000)
    assert seen == list(range(2000))
    received = env["metrics"].get_sample_value(
        "commbus_wire_messages_total",
        {"transport": "rabbitmq", "direction": "received", "pattern": "publish"},
    )
    assert received == 2000


async def test_first_connect_fails_fast_and_never_shows_credentials(caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for url in (
        f"amqp://app:s3cr3t-pw@127.0.0.1:{port}/",  # nothing listens
        brokers.RABBITMQ_URL.replace("guest:guest@", "guest:s3cr3t-pw@"),  # login refused
    ):
        if "s3cr3t" not in url:
            pytest.skip("JT_RABBITMQ_URL has no guest:guest credentials to replace")
        bus = InMemoryCommBus(instrument=False)
        logger = ListLogger()
        started = time.monotonic()
        with pytest.raises(TransportError) as info:
            await asyncio.wait_for(
                RabbitMQTransport.connect(bus, url, metrics=False, logger=logger), 30
            )
        assert time.monotonic() - started < 5
        assert "s3cr3t" not in str(info.value) and "***" in str(info.value)
        assert bus.transport is None
        assert all("s3cr3t" not in f"{m} {f}" for _, m, f in logger.records)
    assert "s3cr3t" not in caplog.text


async def test_a_url_that_is_no_rabbitmq_url_or_names_no_vhost_says_so() -> None:
    bus = InMemoryCommBus(instrument=False)
    for url in ("localhost:5672", "redis://app:s3cr3t-pw@localhost:6379/0", "http://h/"):
        with pytest.raises(ValueError, match="not a RabbitMQ URL") as info:
            RabbitMQTransport(bus, url, metrics=False)
        assert "s3cr3t" not in str(info.value)
    url = brokers.require(brokers.RABBITMQ_URL, "RabbitMQ")
    with pytest.raises(TransportError, match="virtual host"):
        await RabbitMQTransport.connect(bus, url.rstrip("/") + "/no-such-vhost", metrics=False)
    assert bus.transport is None


async def test_credentials_are_never_logged_while_connected(caplog: Any) -> None:
    url = brokers.require(brokers.RABBITMQ_URL, "RabbitMQ")
    caplog.set_level(logging.DEBUG)
    logger = ListLogger()
    bus = InMemoryCommBus(instrument=False)
    t = await RabbitMQTransport.connect(
        bus, url, prefix=brokers.unique("jttest"), registry=REGISTRY, metrics=False, logger=logger
    )
    try:
        bus.register_handler("Ask", lambda q: q.n)
        await t.sync()
        assert await bus.query(Ask(2)) == 2
        assert "guest:guest" not in t.url
    finally:
        await t.close()
    assert all("guest:guest" not in f"{m} {f}" for _, m, f in logger.records)
    assert "guest:guest" not in caplog.text


async def test_the_event_writer_reports_what_it_holds_while_disconnected() -> None:
    """commbus_transport_buffered_messages: frames held while the broker is away, reported
    up when they queue, down as they go out; nothing held while connected."""
    from jeeves_control_tower.ipc.adapters.rabbitmq.events import EventWriter

    class Underlay:
        def __init__(self) -> None:
            self.sent: list[str] = []
            self.fail = False

        async def basic_publish(self, body: bytes, *, routing_key: str, **_: Any) -> None:
            if self.fail:
                raise ConnectionError("gone")
            self.sent.append(routing_key)

    class Channel:
        def __init__(self) -> None:
            self.underlay = Underlay()

        async def get_underlay_channel(self) -> Underlay:
            return self.underlay

    channel, up, deltas = Channel(), [True], list[int]()
    writer = EventWriter(
        channel,
        "x.events",
        seal=lambda b: b,
        logger=ListLogger(),
        up=lambda: up[0],
        on_held=deltas.append,
    )
    writer.write(("a", b"1"))
    await writer.drained()
    assert channel.underlay.sent == ["a"] and writer.held == 0 and deltas == []
    up[0], channel.underlay.fail = False, True
    for key in "bcd":
        writer.write((key, b"2"))
    await eventually(lambda: writer.held == 3)
    assert sum(deltas) == 3
    up[0], channel.underlay.fail = True, False
    await asyncio.wait_for(writer.drained(), 5)
    assert channel.underlay.sent == ["a", "b", "c", "d"]
    assert writer.held == 0 and sum(deltas) == 0
    up[0], channel.underlay.fail = False, True
    writer.write(("e", b"3"))
    await eventually(lambda: writer.held == 1)
    await writer.close()  # what it held is gone with it, and no longer reported
    assert writer.held == 0 and sum(deltas) == 0
