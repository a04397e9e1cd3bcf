"""Redis-specific behaviour: hostile frames, reclaim, dead letters, outages, credentials."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import InMemoryCommBus, TransportError
from jeeves_control_tower.ipc.adapters import MessageRegistry, RemoteError
from jeeves_control_tower.ipc.adapters.redis import RedisTransport
from jeeves_control_tower.testing import eventually
from jeeves_control_tower.testing.messages import REGISTRY, Ask, DoWork, Happened
from tests import brokers
from tests.helpers import ListLogger

from .wire_counts import check_wire_counts

pytestmark = pytest.mark.redis


@pytest.fixture
async def env() -> AsyncIterator[dict[str, Any]]:
    import redis.asyncio as aioredis

    url = brokers.require(brokers.REDIS_URL, "Redis")
    prefix = brokers.unique("jt:test:") + ":"
    raw = aioredis.from_url(url)
    transports: list[RedisTransport] = []
    reg = CollectorRegistry()

    async def connect(bus: InMemoryCommBus, **kw: Any) -> RedisTransport:
        kw.setdefault("registry", REGISTRY)
        kw.setdefault("metrics_registry", reg)
        t = await RedisTransport.connect(bus, kw.pop("url", url), prefix=prefix, **kw)
        transports.append(t)
        return t

    yield {"url": url, "prefix": prefix, "raw": raw, "connect": connect, "metrics": reg}
    for t in transports:
        await t.close()
    keys = [k async for k in raw.scan_iter(match=f"{prefix}*")]
    if keys:
        await raw.delete(*keys)
    await raw.aclose()


def rejected(reg: CollectorRegistry, reason: str) -> float:
    labels = {"transport": "redis", "reason": reason}
    return reg.get_sample_value("commbus_wire_rejected_total", labels) or 0.0


async def test_hostile_frames_never_stop_a_consumer(env: dict[str, Any]) -> None:
    bus = InMemoryCommBus(instrument=False)
    logger = ListLogger()
    t = await env["connect"](bus, logger=logger)
    events: list[int] = []
    commands: list[int] = []
    bus.subscribe("Happened", lambda e: events.append(e.n))
    bus.register_handler("DoWork", lambda c: commands.append(c.n))
    await t.sync()
    raw, p = env["raw"], env["prefix"]
    for pattern in ("publish", "send"):
        evil = f'{{"v": 1, "id": "x", "type": "Evil", "pattern": "{pattern}", "payload": {{}}}}'
        for junk in (b"\xff\x00garbage", b"[]", evil.encode(), b"{" * 5000):
            if pattern == "publish":
                await raw.publish(f"{p}evt:Happened", junk)
            else:
                await raw.xadd(f"{p}cmd:DoWork", {"f": junk})
    await raw.xadd(f"{p}cmd:DoWork", {"not_f": b"x"})
    await bus.publish(Happened(1))
    await bus.send(DoWork(2))
    await eventually(lambda: events == [1] and commands == [2])
    assert rejected(env["metrics"], "malformed") >= 6
    assert rejected(env["metrics"], "unknown_type") == 2
    for _ in range(200):  # the acknowledgements follow the handlers: wait for them too
        dead = await raw.xrange(t.dead_letters)
        if len(dead) >= 5 and await raw.xlen(f"{p}cmd:DoWork") == 0:
            break
        await asyncio.sleep(0.05)
    assert len(dead) == 5 and {d[1][b"reason"] for d in dead} == {b"rejected"}
    assert await raw.xlen(f"{p}cmd:DoWork") == 0  # everything acknowledged and deleted
    assert "frame_rejected" in logger.messages("warning")
    assert all("garbage" not in str(fields) for _, _, fields in logger.records)


async def test_a_query_the_responder_cannot_decode_fails_fast(env: dict[str, Any]) -> None:
    a, b = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)
    skewed = MessageRegistry()  # B knows an older Ask, without the newer fields

    @dataclass
    class OldAsk:
        n: int

    skewed.register(OldAsk, "Ask")
    await env["connect"](a)
    tb = await env["connect"](b, registry=skewed)
    b.register_handler("Ask", lambda q: q.n)
    await tb.sync()
    with pytest.raises(RemoteError, match="bad_field"):
        await a.query(Ask(1), timeout=3)  # answered at once, not a timeout


async def test_a_dead_consumers_commands_are_reclaimed(env: dict[str, Any]) -> None:
    raw, p = env["raw"], env["prefix"]
    producer = InMemoryCommBus(instrument=False)
    await env["connect"](producer)
    stream = f"{p}cmd:DoWork"
    await raw.xgroup_create(stream, "handlers", id="0", mkstream=True)
    await producer.send(DoWork(1))
    await producer.send(DoWork(2))
    taken = await raw.xreadgroup("handlers", "ghost", {stream: ">"}, count=2)
    assert len(taken[0][1]) == 2  # a consumer took both, then "died"

    consumer = InMemoryCommBus(instrument=False)
    handled: list[int] = []
    consumer.register_handler("DoWork", lambda c: handled.append(c.n))
    await env["connect"](consumer, min_idle=0.3)
    await eventually(lambda: sorted(handled) == [1, 2])
    labels = {"transport": "redis"}
    assert env["metrics"].get_sample_value("commbus_transport_redeliveries_total", labels) == 2


async def test_a_command_that_keeps_killing_consumers_is_dead_lettered(env: dict[str, Any]) -> None:
    raw, p = env["raw"], env["prefix"]
    producer = InMemoryCommBus(instrument=False)
    await env["connect"](producer)
    stream = f"{p}cmd:DoWork"
    await raw.xgroup_create(stream, "handlers", id="0", mkstream=True)
    await producer.send(DoWork(1))
    entry_id = (await raw.xreadgroup("handlers", "ghost", {stream: ">"}))[0][1][0][0]
    for i in range(3):  # three more deliveries to consumers that died
        await raw.xclaim(stream, "handlers", f"ghost{i}", 0, [entry_id])
    consumer = InMemoryCommBus(instrument=False)
    handled: list[int] = []
    consumer.register_handler("DoWork", lambda c: handled.append(c.n))
    t = await env["connect"](consumer, min_idle=0.2, max_deliveries=3)
    for _ in range(200):
        if await raw.xlen(t.dead_letters):
            break
        await asyncio.sleep(0.02)
    dead = await raw.xrange(t.dead_letters)
    assert [d[1][b"reason"] for d in dead] == [b"max_deliveries"]
    assert handled == []
    labels = {"transport": "redis", "message_type": "DoWork", "reason": "max_deliveries"}
    await eventually(
        lambda: env["metrics"].get_sample_value("commbus_dead_letters_total", labels) == 1
    )
    depth = {"transport": "redis", "queue": t.dead_letters}
    assert env["metrics"].get_sample_value("commbus_dead_letter_messages", depth) == 1


async def test_slow_handler_keeps_its_commands(env: dict[str, Any]) -> None:
    """A live consumer slower than min_idle is not robbed (its entries are kept alive)."""
    a, b = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)
    handled: list[tuple[str, int]] = []

    # The handler runs 2.5x min_idle, so b tries to claim the entry several times meanwhile;
    # a re-claims it every min_idle / 3, which leaves a loaded machine 0.66 s of slack (at
    # min_idle 0.2 a 0.13 s stall of a's loop let b rob it: CI run ci3).
    async def slow(cmd: DoWork) -> None:
        await asyncio.sleep(2.5)
        handled.append(("a", cmd.n))

    a.register_handler("DoWork", slow)
    await env["connect"](a, min_idle=1.0, prefetch=1)
    await a.send(DoWork(1))
    await asyncio.sleep(0.1)
    b.register_handler("DoWork", lambda c: handled.append(("b", c.n)))
    await env["connect"](b, min_idle=1.0)
    await eventually(lambda: len(handled) >= 1, timeout=10)
    await asyncio.sleep(0.5)
    assert handled == [("a", 1)]


@pytest.mark.slow
async def test_outage_buffers_then_flushes_and_nothing_is_lost() -> None:
    with brokers.RedisServer() as server:
        producer, consumer = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)
        handled: list[int] = []
        events: list[int] = []
        consumer.register_handler("DoWork", lambda c: handled.append(c.n))
        consumer.subscribe("Happened", lambda e: events.append(e.n))
        opts = {"registry": REGISTRY, "metrics": False, "prefix": "o:"}
        tp = await RedisTransport.connect(producer, server.url, **opts)
        tc = await RedisTransport.connect(consumer, server.url, **opts)
        strict = await RedisTransport.connect(
            InMemoryCommBus(instrument=False), server.url, buffer_size=0, **opts
        )
        try:
            for i in range(20):
                await producer.send(DoWork(i))
            await eventually(lambda: len(handled) == 20)
            server.stop()
            await asyncio.sleep(0.2)
            for i in range(20, 60):
                await producer.send(DoWork(i))  # buffered: returns at once
            with pytest.raises(TransportError):
                await strict.bus.send(DoWork(-1))  # no buffer: fails loudly
            with pytest.raises(TransportError):
                await producer.query(Ask(1), timeout=1)
            server.start()
            await tp.flush(timeout=10)
            await eventually(lambda: sorted(set(handled)) == list(range(60)), timeout=15)
            for _ in range(100):  # pub/sub: events sent before the resubscription are lost
                await producer.publish(Happened(7))
                await asyncio.sleep(0.05)
                if events:
                    break
            assert events and set(events) == {7}
        finally:
            for t in (tp, tc, strict):
                await t.close()


async def test_credentials_are_used_but_never_logged() -> None:
    secret = "s3cr3t-pw"
    with brokers.RedisServer(password=secret) as server:
        logger = ListLogger()
        bus = InMemoryCommBus(instrument=False)
        t = await RedisTransport.connect(
            bus, server.url, registry=REGISTRY, metrics=False, logger=logger
        )
        assert secret not in t.url and "***" in t.url
        bus.register_handler("Ask", lambda q: q.n)
        await t.sync()
        assert await bus.query(Ask(3)) == 3
        await t.close()
        wrong = server.url.replace(secret, "wrong")
        with pytest.raises(TransportError) as info:
            await RedisTransport.connect(InMemoryCommBus(instrument=False), wrong, logger=logger)
        assert "wrong" not in str(info.value) and secret not in str(info.value)
        assert all(secret not in f"{m} {f}" for _, m, f in logger.records)


async def test_first_connect_fails_fast_and_names_the_server_without_credentials() -> None:
    # As NatsTransport: a refused connection or a refused password raises TransportError
    # at once with the default options (no retrying the first connect).
    secret = "s3cr3t-pw"
    with brokers.RedisServer(password=secret) as server:
        refused = f"redis://:{secret}@127.0.0.1:{brokers.free_port()}/0"
        for url in (refused, server.url.replace(secret, "wrong-pw")):
            bus = InMemoryCommBus(instrument=False)
            started = time.monotonic()
            with pytest.raises(TransportError) as info:
                await asyncio.wait_for(
                    RedisTransport.connect(bus, url, registry=REGISTRY, metrics=False),
                    timeout=30,
                )
            assert time.monotonic() - started < 5, url
            assert bus.transport is None
            text = str(info.value)
            assert "***" in text and "127.0.0.1:" in text
            assert secret not in text and "wrong-pw" not in text


async def test_wire_messages_are_counted_per_direction_and_pattern(env: dict[str, Any]) -> None:
    await check_wire_counts(env, "redis")
