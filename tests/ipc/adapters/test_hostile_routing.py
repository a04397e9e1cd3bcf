"""Hostile frames injected with the raw broker clients (redis-py, nats-py, aio-pika), as any client
allowed on the broker could: a frame read from another type's destination is never
delivered, a query cannot hold a slot for ever, replies must carry their query's
unguessable corr, dead letters are counted and measured."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.ipc.adapters import RemoteError
from jeeves_control_tower.ipc.adapters.wire.signing import TAG_BYTES, Signer
from jeeves_control_tower.testing import eventually
from jeeves_control_tower.testing.messages import REGISTRY, Ask, DoWork, Happened
from tests import brokers
from tests.conformance.conftest import nats_cleanup, rabbitmq_cleanup, redis_cleanup


def frame(mtype: str, pattern: str, n: int, **extra: Any) -> dict[str, Any]:
    return {"v": 1, "id": f"evil_{mtype}_{n}", "type": mtype, "pattern": pattern,
            "payload": {"n": n}, **extra}  # fmt: skip


def wire(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode()


def unwire(data: bytes) -> Any:
    """A frame as JSON, its signature (if any) left off."""
    try:
        return json.loads(data)
    except ValueError:
        return json.loads(data[:-TAG_BYTES])


async def asked(queue: asyncio.Queue[Any], query: asyncio.Task[Any]) -> Any:
    """The next request the fake responder got, while ``query`` runs: a query that ended
    first (it never reached the responder) fails here at once, with what it ended by."""
    get = asyncio.ensure_future(queue.get())
    done, _ = await asyncio.wait({get, query}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    if get in done:
        return get.result()
    get.cancel()
    if query in done:
        ended = "cancelled" if query.cancelled() else repr(query.exception() or query.result())
        raise AssertionError(f"the query ended before the responder got it: {ended}")
    raise AssertionError("the responder got no request within 5 s")


class Broker:
    """One broker seen by the transports under test and by a raw client (the attacker)."""

    kind: str
    url: str
    prefix: str
    metrics: CollectorRegistry
    transports: list[Any]

    async def connect(self, bus: InMemoryCommBus, **kw: Any) -> Any:
        kw.setdefault("registry", REGISTRY)
        kw.setdefault("metrics_registry", self.metrics)
        t = await self.cls.connect(bus, self.url, prefix=self.prefix, **kw)
        self.transports.append(t)
        return t

    def rejected(self, reason: str) -> float:
        labels = {"transport": self.kind, "reason": reason}
        return self.metrics.get_sample_value("commbus_wire_rejected_total", labels) or 0.0

    cls: Any

    async def inject_event(self, t: Any, dest_type: str, data: bytes) -> None:
        raise NotImplementedError

    async def inject_command(self, t: Any, dest_type: str, data: bytes) -> None:
        raise NotImplementedError

    async def spy(self) -> tuple[str, list[dict[str, Any]]]:
        """A return address the attacker reads, and the reply frames that arrive there."""
        raise NotImplementedError

    async def inject_query(self, t: Any, dest_type: str, data: bytes, reply_to: str) -> None:
        raise NotImplementedError

    async def fake_responder(self, t: Any, query_type: str) -> asyncio.Queue[Any]:
        """Answer ``query_type`` as the attacker: the queue yields ``(frame, reply)``
        where ``await reply(bytes)`` answers with the given reply frame."""
        raise NotImplementedError

    async def close(self) -> None:
        for t in self.transports:
            await t.close()


class RedisBroker(Broker):
    kind = "redis"

    def __init__(self) -> None:
        import redis.asyncio as aioredis

        from jeeves_control_tower.ipc.adapters.redis import RedisTransport

        self.cls = RedisTransport
        self.url = brokers.require(brokers.REDIS_URL, "Redis")
        self.prefix = brokers.unique("jt:test:") + ":"
        self.raw = aioredis.from_url(self.url)
        self.metrics = CollectorRegistry()
        self.transports = []
        self._pubsubs: list[Any] = []
        self._tasks: list[asyncio.Task[Any]] = []

    async def inject_event(self, t: Any, dest_type: str, data: bytes) -> None:
        assert await self.raw.publish(t.destination("publish", dest_type), data) == 1

    async def inject_command(self, t: Any, dest_type: str, data: bytes) -> None:
        await self.raw.xadd(t.destination("send", dest_type), {"f": data})

    async def _listen(self, channel: str, on_message: Any) -> None:
        ps = self.raw.pubsub()
        await ps.subscribe(channel)
        self._pubsubs.append(ps)

        async def read() -> None:
            async for msg in ps.listen():
                if msg["type"] == "message":
                    on_message(msg["data"])

        self._tasks.append(asyncio.get_running_loop().create_task(read()))

    async def spy(self) -> tuple[str, list[dict[str, Any]]]:
        channel = f"{self.prefix}rep:spy"
        replies: list[dict[str, Any]] = []
        await self._listen(channel, lambda d: replies.append(json.loads(d.partition(b" ")[2])))
        return channel, replies

    async def inject_query(self, t: Any, dest_type: str, data: bytes, reply_to: str) -> None:
        await self.raw.lpush(t.destination("query", dest_type), data)

    async def fake_responder(self, t: Any, query_type: str) -> asyncio.Queue[Any]:
        key = t.destination("query", query_type)
        await self._listen(key, lambda d: None)  # the presence the request script checks
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def pop() -> None:
            while True:
                popped: Any = await self.raw.brpop([key])
                request = unwire(popped[1])
                await queue.put((request, self._replier(request)))

        self._tasks.append(asyncio.get_running_loop().create_task(pop()))
        return queue

    def _replier(self, request: dict[str, Any]) -> Any:
        async def reply(body: bytes) -> None:
            await self.raw.publish(request["reply_to"], request["corr"].encode() + b" " + body)

        return reply

    async def close(self) -> None:
        await super().close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for ps in self._pubsubs:
            await ps.aclose()
        await self.raw.aclose()
        await redis_cleanup(self.url, self.prefix)


class NatsBroker(Broker):
    kind = "nats"

    def __init__(self) -> None:
        from jeeves_control_tower.ipc.adapters.nats import NatsTransport

        self.cls = NatsTransport
        self.url = brokers.require(brokers.NATS_URL, "NATS")
        self.prefix = brokers.unique("jttest")
        self.metrics = CollectorRegistry()
        self.transports = []

    async def start(self) -> None:
        import nats

        self.raw = await nats.connect(self.url)

    async def inject_event(self, t: Any, dest_type: str, data: bytes) -> None:
        await self.raw.publish(t.destination("publish", dest_type), data)
        await self.raw.flush()

    async def inject_command(self, t: Any, dest_type: str, data: bytes) -> None:
        await self.raw.jetstream().publish(t.destination("send", dest_type), data)

    async def spy(self) -> tuple[str, list[dict[str, Any]]]:
        inbox = self.raw.new_inbox()
        replies: list[dict[str, Any]] = []

        async def on_message(msg: Any) -> None:
            replies.append(json.loads(msg.data))

        await self.raw.subscribe(inbox, cb=on_message)
        await self.raw.flush()
        return inbox, replies

    async def inject_query(self, t: Any, dest_type: str, data: bytes, reply_to: str) -> None:
        await self.raw.publish(t.destination("query", dest_type), data, reply=reply_to)
        await self.raw.flush()

    async def fake_responder(self, t: Any, query_type: str) -> asyncio.Queue[Any]:
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def on_message(msg: Any) -> None:
            async def reply(body: bytes, to: str = msg.reply) -> None:
                await self.raw.publish(to, body)

            await queue.put((unwire(msg.data), reply))

        await self.raw.subscribe(t.destination("query", query_type), cb=on_message)
        await self.raw.flush()
        return queue

    async def close(self) -> None:
        await super().close()
        await self.raw.close()
        await nats_cleanup(self.url, self.prefix)


class RabbitMQBroker(Broker):
    kind = "rabbitmq"

    def __init__(self) -> None:
        from jeeves_control_tower.ipc.adapters.rabbitmq import RabbitMQTransport

        self.cls = RabbitMQTransport
        self.url = brokers.require(brokers.RABBITMQ_URL, "RabbitMQ")
        self.prefix = brokers.unique("jttest")
        self.metrics = CollectorRegistry()
        self.transports = []

    async def start(self) -> None:
        import aio_pika

        self.raw = await aio_pika.connect(self.url)
        self.channel = await self.raw.channel()

    async def _publish(self, exchange: Any, key: str, data: bytes, **props: Any) -> None:
        import aio_pika

        await exchange.publish(aio_pika.Message(data, **props), key)

    async def inject_event(self, t: Any, dest_type: str, data: bytes) -> None:
        exchange_name, _, key = t.destination("publish", dest_type).partition("/")
        exchange = await self.channel.get_exchange(exchange_name, ensure=False)
        await self._publish(exchange, key, data)

    async def inject_command(self, t: Any, dest_type: str, data: bytes) -> None:
        await self._publish(self.channel.default_exchange, t.destination("send", dest_type), data)

    async def spy(self) -> tuple[str, list[dict[str, Any]]]:
        replies: list[dict[str, Any]] = []

        async def on_reply(message: Any) -> None:
            replies.append(json.loads(message.body))

        queue = await self.channel.get_queue("amq.rabbitmq.reply-to", ensure=False)
        await queue.consume(on_reply, no_ack=True)
        return "amq.rabbitmq.reply-to", replies

    async def inject_query(self, t: Any, dest_type: str, data: bytes, reply_to: str) -> None:
        await self._publish(
            self.channel.default_exchange,
            t.destination("query", dest_type),
            data,
            reply_to=reply_to or None,
            correlation_id="spy",
        )

    async def fake_responder(self, t: Any, query_type: str) -> asyncio.Queue[Any]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        declared = await self.channel.declare_queue(
            t.destination("query", query_type), auto_delete=True
        )

        async def on_message(message: Any) -> None:
            async def reply(body: bytes, m: Any = message) -> None:
                await self._publish(
                    self.channel.default_exchange, m.reply_to, body, correlation_id=m.correlation_id
                )

            await queue.put((unwire(message.body), reply))

        await declared.consume(on_message, no_ack=True)
        return queue

    async def close(self) -> None:
        durable = set().union(*(t.topology.durable for t in self.transports))
        await super().close()
        await self.raw.close()
        await rabbitmq_cleanup(self.url, durable)


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("nats", marks=pytest.mark.nats),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    ]
)
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    b: Broker
    if request.param == "redis":
        b = RedisBroker()
    elif request.param == "rabbitmq":
        b = RabbitMQBroker()
        await b.start()
    else:
        b = NatsBroker()
        await b.start()
    try:
        yield b
    finally:
        await b.close()


# ---------------------------------------------------------------------- wrong destination


async def test_an_event_read_from_another_types_destination_is_never_delivered(
    broker: Broker,
) -> None:
    bus = InMemoryCommBus(instrument=False)
    t = await broker.connect(bus)
    happened: list[int] = []
    other: list[int] = []
    bus.subscribe("Happened", lambda e: happened.append(e.n))
    bus.subscribe("Other", lambda e: other.append(e.n))
    await t.sync()
    # Another type, and the right type with the wrong pattern, on Happened's destination
    await broker.inject_event(t, "Happened", wire(frame("Other", "publish", 66)))
    await broker.inject_event(t, "Happened", wire(frame("Happened", "send", 67)))
    # A batch frame: each element is checked against the destination on its own
    batch = {"v": 1, "batch": [frame("Happened", "publish", 1), frame("Other", "publish", 68),
                               frame("Happened", "publish", 2)]}  # fmt: skip
    await broker.inject_event(t, "Happened", wire(batch))
    await bus.publish(Happened(3))
    # 3 comes over the transport's own connection, the injected frames over another one:
    # the broker orders neither against the other
    await eventually(lambda: sorted(happened) == [1, 2, 3])
    await eventually(lambda: broker.rejected("wrong_destination") == 3)
    assert other == [] and happened.index(1) < happened.index(2)


async def test_a_command_read_from_another_types_stream_is_dead_lettered(
    broker: Broker,
) -> None:
    bus = InMemoryCommBus(instrument=False)
    t = await broker.connect(bus)
    work: list[int] = []
    asked: list[int] = []
    bus.register_handler("DoWork", lambda c: work.append(c.n))
    bus.register_handler("Ask", lambda c: asked.append(c.n))
    await t.sync()
    await broker.inject_command(t, "DoWork", wire(frame("Ask", "send", 66)))
    await broker.inject_command(t, "DoWork", wire(frame("DoWork", "query", 67)))
    await bus.send(DoWork(1))
    await eventually(lambda: work == [1])
    dead = {"transport": broker.kind, "message_type": "DoWork", "reason": "rejected"}
    await eventually(
        lambda: broker.metrics.get_sample_value("commbus_dead_letters_total", dead) == 2
    )
    assert broker.rejected("wrong_destination") == 2
    assert asked == []
    depth = {"transport": broker.kind, "queue": _dead_queue(t)}
    assert await t.dead_letter_depth() == 2
    assert broker.metrics.get_sample_value("commbus_dead_letter_messages", depth) == 2


def _dead_queue(t: Any) -> str:
    return str(getattr(t, "dead_stream", None) or t.dead_letters)


async def test_a_query_read_from_another_types_destination_is_not_answered(
    broker: Broker,
) -> None:
    bus = InMemoryCommBus(instrument=False)
    t = await broker.connect(bus)
    asked: list[int] = []
    others: list[int] = []

    def answer(q: Ask) -> int:
        asked.append(q.n)
        return q.n

    bus.register_handler("Ask", answer)
    bus.register_handler("DoWork", lambda q: others.append(q.n))
    await t.sync()
    reply_to, replies = await broker.spy()
    extra = {"reply_to": reply_to, "corr": "c1", "ttl": 5, "ts": time.time()}
    await broker.inject_query(t, "Ask", wire(frame("DoWork", "query", 66, **extra)), reply_to)
    await broker.inject_query(t, "Ask", wire(frame("Ask", "publish", 67, **extra)), reply_to)
    await eventually(lambda: broker.rejected("wrong_destination") == 2)
    requester = InMemoryCommBus(instrument=False)
    await broker.connect(requester)
    assert await requester.query(Ask(5), timeout=5) == 5
    assert asked == [5] and others == [] and replies == []


# ---------------------------------------------------------------------- query deadlines


async def test_queries_without_a_usable_ttl_cannot_hold_the_slots(broker: Broker) -> None:
    responder = InMemoryCommBus(instrument=False, query_timeout=1.0)
    t = await broker.connect(responder, max_concurrency=4)

    async def answer(q: Ask) -> int:
        if q.n < 0:
            await asyncio.sleep(3600)  # a handler that never answers
        return q.n

    responder.register_handler("Ask", answer)
    await t.sync()
    reply_to, replies = await broker.spy()
    now = time.time()
    hanging: list[dict[str, Any]] = [
        {},
        {"ttl": 0},
        {"ttl": 0, "ts": now},
        {"ttl": 1e12, "ts": now},
    ]
    for i, fields in enumerate(hanging):  # exactly max_concurrency of them
        hostile = frame("Ask", "query", -1 - i, reply_to=reply_to, corr=f"h{i}", **fields)
        await broker.inject_query(t, "Ask", wire(hostile), reply_to)
    for i, ttl in enumerate(("soon", -1)):  # not a ttl at all: refused at once
        hostile = frame("Ask", "query", -10 - i, reply_to=reply_to, corr=f"r{i}", ttl=ttl)
        await broker.inject_query(t, "Ask", wire(hostile), reply_to)
    requester = InMemoryCommBus(instrument=False)
    await broker.connect(requester)
    started = time.monotonic()
    assert await requester.query(Ask(5), timeout=10) == 5  # a slot came free after the cap
    assert time.monotonic() - started < 8
    await eventually(lambda: len(replies) == 6)
    kinds = sorted((r["corr"], r["error"]["kind"]) for r in replies)
    assert kinds == [("h0", "timeout"), ("h1", "timeout"), ("h2", "timeout"),
                     ("h3", "timeout"), ("r0", "rejected"), ("r1", "rejected")]  # fmt: skip


async def test_a_query_without_a_return_address_never_runs(broker: Broker) -> None:
    """Nobody could receive its answer: it is rejected (``no_reply_to``) before its
    handler runs, and never holds a query slot."""
    responder = InMemoryCommBus(instrument=False, query_timeout=30.0)
    t = await broker.connect(responder, max_concurrency=1)
    started: list[int] = []

    async def answer(q: Ask) -> int:
        started.append(q.n)
        if q.n < 0:
            await asyncio.sleep(3600)  # would hold the only slot for the 30 s cap
        return q.n

    responder.register_handler("Ask", answer)
    await t.sync()
    fields = {"corr": "c1", "ttl": 30, "ts": time.time()}
    # No reply_to in the frame, and (NATS) no reply subject
    await broker.inject_query(t, "Ask", wire(frame("Ask", "query", -1, **fields)), "")
    # Redis: a reply_to outside the namespace; NATS: one in the frame, none on the message
    elsewhere = frame("Ask", "query", -2, reply_to="elsewhere", **fields)
    await broker.inject_query(t, "Ask", wire(elsewhere), "")
    await eventually(lambda: broker.rejected("no_reply_to") == 2)
    requester = InMemoryCommBus(instrument=False)
    await broker.connect(requester)
    assert await requester.query(Ask(5), timeout=5) == 5  # the only slot is free
    assert started == [5]


async def test_max_query_ttl_caps_what_a_frame_asks_for(broker: Broker) -> None:
    responder = InMemoryCommBus(instrument=False)
    t = await broker.connect(responder, max_query_ttl=0.5)

    async def slow(q: Ask) -> int:
        await asyncio.sleep(q.sleep)
        return q.n

    responder.register_handler("Ask", slow)
    await t.sync()
    assert t.inbound.query_ttl_cap() == 0.5
    requester = InMemoryCommBus(instrument=False)
    await broker.connect(requester)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="remote handler timed out"):
        await requester.query(Ask(1, sleep=30), timeout=20)
    assert time.monotonic() - started < 10
    assert await requester.query(Ask(2, sleep=0.01), timeout=20) == 2


def test_max_query_ttl_must_be_a_positive_number() -> None:
    from jeeves_control_tower.ipc.adapters.redis import RedisTransport

    for bad in (0, -1, float("inf"), float("nan"), "5"):
        with pytest.raises(ValueError, match="max_query_ttl"):
            RedisTransport(InMemoryCommBus(instrument=False), max_query_ttl=bad)


# ---------------------------------------------------------------------- replies


async def test_replies_must_carry_the_querys_unguessable_corr(broker: Broker) -> None:
    requester = InMemoryCommBus(instrument=False)
    t = await broker.connect(requester)
    queue = await broker.fake_responder(t, "Ask")
    seen: list[dict[str, Any]] = []

    async def ask(n: int) -> Any:
        return await requester.query(Ask(n), timeout=5)

    # A reply frame naming another corr (the old counter's first value, say) is refused
    first = asyncio.get_running_loop().create_task(ask(1))
    request, reply = await asked(queue, first)
    seen.append(request)
    await reply(wire({"v": 1, "corr": "1", "ok": True, "result": 666}))
    with pytest.raises(RemoteError, match="unexpected_reply"):
        await first
    assert broker.rejected("unexpected_reply") == 1
    # ...and the right one is accepted
    second = asyncio.get_running_loop().create_task(ask(2))
    request, reply = await asked(queue, second)
    seen.append(request)
    await reply(wire({"v": 1, "corr": request["corr"], "ok": True, "result": 2}))
    assert await second == 2
    corrs = [r["corr"] for r in seen]
    assert corrs[0] != corrs[1]
    assert all(len(c) >= 20 for c in corrs)  # 128 random bits, not a counter
    if broker.kind == "redis":  # the reply channel is not derived from the process id
        channel = seen[0]["reply_to"]
        assert channel.startswith(f"{broker.prefix}rep:{t.process_id}.")
        assert len(channel) >= len(f"{broker.prefix}rep:{t.process_id}.") + 20


async def test_a_redis_reply_on_the_reply_channel_needs_the_pending_corr() -> None:
    b = RedisBroker()
    try:
        requester = InMemoryCommBus(instrument=False)
        t = await b.connect(requester)
        queue = await b.fake_responder(t, "Ask")
        task = asyncio.get_running_loop().create_task(requester.query(Ask(1), timeout=2))
        request, _ = await asked(queue, task)
        forged = wire({"v": 1, "corr": "1", "ok": True, "result": 666})
        for corr in (b"1", b"2", b""):  # what a counter would have given: ignored
            await b.raw.publish(request["reply_to"], corr + b" " + forged)
        with pytest.raises(TimeoutError):
            await task
    finally:
        await b.close()


# ---------------------------------------------------------------------- gaps


@pytest.mark.redis
async def test_a_redis_stream_entry_without_a_frame_is_counted_and_dead_lettered() -> None:
    b = RedisBroker()
    try:
        bus = InMemoryCommBus(instrument=False)
        t = await b.connect(bus)
        work: list[int] = []
        bus.register_handler("DoWork", lambda c: work.append(c.n))
        await t.sync()
        await b.raw.xadd(t.destination("send", "DoWork"), {"not_f": b"x"})
        await bus.send(DoWork(1))
        await eventually(lambda: work == [1])
        dead = {"transport": "redis", "message_type": "DoWork", "reason": "rejected"}
        await eventually(
            lambda: b.metrics.get_sample_value("commbus_dead_letters_total", dead) == 1
        )
        assert b.rejected("malformed") == 1
        assert await b.raw.xlen(t.dead_letters) == 1
    finally:
        await b.close()


def test_the_dead_letter_counter_bounds_its_message_type_label() -> None:
    from jeeves_control_tower.ipc.adapters.metrics import MAX_LABEL_VALUES, AdapterMetrics

    reg = CollectorRegistry()
    a, b = AdapterMetrics("redis", reg), AdapterMetrics("nats", reg)  # share the collector
    for i in range(MAX_LABEL_VALUES):
        (a if i % 2 else b).dead_lettered(f"T{i}", "rejected")
    a.dead_lettered("one.too.many", "rejected")
    b.dead_lettered("x" * 300, "max_deliveries")
    a.dead_lettered("T1", "rejected")  # admitted before: still its own series
    types = {
        s.labels["message_type"]
        for m in reg.collect()
        if m.name == "commbus_dead_letters"
        for s in m.samples
        if s.name.endswith("_total")
    }
    assert len(types) == MAX_LABEL_VALUES + 1 and "other" in types
    other = {"transport": "redis", "message_type": "other", "reason": "rejected"}
    assert reg.get_sample_value("commbus_dead_letters_total", other) == 1
    t1 = {"transport": "redis", "message_type": "T1", "reason": "rejected"}
    assert reg.get_sample_value("commbus_dead_letters_total", t1) == 2


# ---------------------------------------------------------------------- signatures

KEY = "a shared secret of 32 characters"


async def test_with_a_signing_key_only_signed_frames_are_accepted(broker: Broker) -> None:
    bus, peer = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)
    t = await broker.connect(bus, signing_key=KEY)
    await broker.connect(peer, signing_key=KEY)
    events: list[int] = []
    work: list[int] = []
    asked: list[int] = []

    def answer(q: Ask) -> int:
        asked.append(q.n)
        return q.n

    bus.subscribe("Happened", lambda e: events.append(e.n))
    bus.register_handler("DoWork", lambda c: work.append(c.n))
    bus.register_handler("Ask", answer)
    await t.sync()
    reply_to, replies = await broker.spy()
    query = {"reply_to": reply_to, "corr": "c1", "ttl": 5, "ts": time.time()}
    for seal in (lambda d: d, Signer("another key, 32 characters long!").seal):
        await broker.inject_event(t, "Happened", seal(wire(frame("Happened", "publish", 66))))
        await broker.inject_command(t, "DoWork", seal(wire(frame("DoWork", "send", 66))))
        hostile = seal(wire(frame("Ask", "query", 66, **query)))
        await broker.inject_query(t, "Ask", hostile, reply_to)
    # The format is the frame followed by its HMAC-SHA256: a holder of the key can write it
    await broker.inject_event(
        t, "Happened", Signer(KEY).seal(wire(frame("Happened", "publish", 1)))
    )
    await asyncio.gather(*(peer.publish(Happened(n)) for n in (2, 3, 4)))  # NATS: a batch
    await peer.send(DoWork(3))
    assert await peer.query(Ask(4), timeout=5) == 4
    # 1 was injected over another connection than 2-4: only the set is the broker's promise
    await eventually(lambda: sorted(events) == [1, 2, 3, 4] and work == [3])
    await eventually(lambda: broker.rejected("bad_signature") == 6)
    dead = {"transport": broker.kind, "message_type": "DoWork", "reason": "rejected"}
    await eventually(
        lambda: broker.metrics.get_sample_value("commbus_dead_letters_total", dead) == 2
    )
    assert asked == [4] and replies == []


async def test_with_a_signing_key_an_unsigned_reply_is_refused(broker: Broker) -> None:
    requester = InMemoryCommBus(instrument=False)
    t = await broker.connect(requester, signing_key=KEY)
    queue = await broker.fake_responder(t, "Ask")
    task = asyncio.get_running_loop().create_task(requester.query(Ask(1), timeout=5))
    request, reply = await asked(queue, task)
    await reply(wire({"v": 1, "corr": request["corr"], "ok": True, "result": 666}))
    with pytest.raises(RemoteError, match="bad_signature"):
        await task
    task = asyncio.get_running_loop().create_task(requester.query(Ask(2), timeout=5))
    request, reply = await asked(queue, task)
    await reply(Signer(KEY).seal(wire({"v": 1, "corr": request["corr"], "ok": True, "result": 2})))
    assert await task == 2


def test_a_signing_key_is_at_least_16_bytes() -> None:
    from jeeves_control_tower.ipc.adapters.redis import RedisTransport

    for bad in ("short", b"", b"x" * 15):
        with pytest.raises(ValueError, match="signing_key"):
            RedisTransport(InMemoryCommBus(instrument=False), signing_key=bad)
    assert KEY not in repr(Signer(KEY))
