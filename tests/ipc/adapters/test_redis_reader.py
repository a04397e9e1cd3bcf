"""The Redis reading path: bounded memory whatever the frame sizes, and the fallback path.

Memory is measured in this process with ``tracemalloc`` (what Python allocated and still
holds after ``gc.collect()``), not RSS.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.ipc.adapters.redis import RedisTransport, fallback, resp
from jeeves_control_tower.testing import eventually
from jeeves_control_tower.testing.messages import REGISTRY, Ask, DoWork, Happened
from tests import brokers
from tests.helpers import traced_memory

from . import test_redis_transport as transport_tests

pytestmark = pytest.mark.redis

BIG = 900_000  # a legal event: under the default max_frame_bytes (1 MiB)
SLACK = 4 << 20  # what a consumer may keep above its baseline after delivery


@pytest.fixture
async def env() -> AsyncIterator[dict[str, Any]]:
    import redis.asyncio as aioredis

    url = brokers.require(brokers.REDIS_URL, "Redis")
    prefix = brokers.unique("jt:test:") + ":"
    raw = aioredis.from_url(url)
    transports: list[RedisTransport] = []
    reg = CollectorRegistry()

    async def connect(bus: InMemoryCommBus) -> RedisTransport:
        t = await RedisTransport.connect(
            bus, url, prefix=prefix, registry=REGISTRY, metrics_registry=reg
        )
        transports.append(t)
        return t

    yield {"prefix": prefix, "raw": raw, "connect": connect, "metrics": reg}
    for t in transports:
        await t.close()
    keys = [k async for k in raw.scan_iter(match=f"{prefix}*")]
    if keys:
        await raw.delete(*keys)
    await raw.aclose()


class Consumer:
    """A consumer bus over Redis and a producer bus, both in this process."""

    def __init__(self) -> None:
        self.bus = InMemoryCommBus(instrument=False)
        self.producer = InMemoryCommBus(instrument=False)
        self.sizes: dict[int, int] = {}  # event n -> length of its note; nothing else kept

    async def start(self, env: dict[str, Any]) -> None:
        self.bus.subscribe("Happened", lambda e: self.sizes.__setitem__(e.n, len(e.note)))
        await (await env["connect"](self.bus)).sync()
        await env["connect"](self.producer)

    async def deliver(self, n: int, size: int = 0) -> None:
        await self.producer.publish(Happened(n, "e" * size))

    async def until_delivered(self, n: int) -> None:
        """Publish small event ``n`` again and again until the consumer saw it."""
        for _ in range(100):
            await self.deliver(n)
            try:
                await eventually(lambda: n in self.sizes, timeout=0.2)
                return
            except AssertionError:
                continue
        raise AssertionError(f"event {n} never arrived")


async def retained(consumer: Consumer, work: Callable[[], Awaitable[None]]) -> int:
    """Bytes still held after ``work`` above the baseline taken before it."""
    await consumer.deliver(-1, BIG)  # warm up every buffer and cache on the way
    await consumer.until_delivered(-2)
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    await work()
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - base


@pytest.fixture
def traced() -> Any:
    with traced_memory():
        yield


@pytest.mark.usefixtures("traced")
async def test_large_legal_events_leave_no_memory_behind(env: dict[str, Any]) -> None:
    consumer = Consumer()
    await consumer.start(env)

    async def work() -> None:
        for n in range(10):
            await consumer.deliver(n, BIG)
        await eventually(lambda: all(consumer.sizes.get(n) == BIG for n in range(10)), 20)
        await consumer.until_delivered(10)

    held = await retained(consumer, work)
    assert held < SLACK, f"{held / 1e6:.1f} MB retained after ten {BIG}-byte events"


@pytest.mark.usefixtures("traced")
async def test_an_oversized_publish_is_refused_unread_and_the_consumer_goes_on(
    env: dict[str, Any],
) -> None:
    consumer = Consumer()
    await consumer.start(env)
    channel = f"{env['prefix']}evt:Happened"

    async def work() -> None:
        await env["raw"].publish(channel, b"x" * (8 << 20))  # a raw client, no codec
        await consumer.until_delivered(1)  # skipped in the stream: the connection stays

    held = await retained(consumer, work)
    assert held < SLACK, f"{held / 1e6:.1f} MB retained after one 8 MB publish"
    labels = {"transport": "redis", "reason": "oversized"}
    assert env["metrics"].get_sample_value("commbus_wire_rejected_total", labels) == 1
    await consumer.deliver(2, BIG)  # legal large events still pass
    await eventually(lambda: consumer.sizes.get(2) == BIG)


async def test_without_the_fast_path_redis_py_reads_and_writes(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No hiredis, or an untested redis-py: every pattern still works, through redis-py."""
    monkeypatch.setattr(resp, "FAST_PATH", False)
    used = {"read": 0, "write": 0}
    read, write = fallback.FallbackReader.read, fallback.QueuedWriter.write

    async def counted_read(self: Any) -> Any:
        used["read"] += 1
        return await read(self)

    def counted_write(self: Any, packed: list[bytes]) -> None:
        used["write"] += 1
        write(self, packed)

    monkeypatch.setattr(fallback.FallbackReader, "read", counted_read)
    monkeypatch.setattr(fallback.QueuedWriter, "write", counted_write)
    consumer = Consumer()
    commands: list[int] = []
    consumer.bus.register_handler("DoWork", lambda c: commands.append(c.n))
    consumer.bus.register_handler("Ask", lambda q: q.n * 2)
    await consumer.start(env)
    for n in range(50):
        await consumer.deliver(n, BIG if n % 10 == 0 else 10)
        await consumer.producer.send(DoWork(n))
    await eventually(lambda: len(consumer.sizes) == 50 and len(commands) == 50, 20)
    assert consumer.sizes[10] == BIG and sorted(commands) == list(range(50))
    assert [await consumer.producer.query(Ask(n), timeout=5) for n in range(5)] == [
        0,
        2,
        4,
        6,
        8,
    ]
    assert used["read"] > 100 and used["write"] > 0


@pytest.mark.slow
async def test_without_the_fast_path_an_outage_buffers_then_flushes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reconnect path over redis-py's own reads and writes (the outage test, again)."""
    monkeypatch.setattr(resp, "FAST_PATH", False)
    await transport_tests.test_outage_buffers_then_flushes_and_nothing_is_lost()


@pytest.mark.usefixtures("traced")
async def test_oversized_messages_on_one_channel_lose_no_events_on_the_others(
    env: dict[str, Any],
) -> None:
    """An oversized Pub/Sub message is skipped in the stream, not by dropping the
    connection: events on every other channel keep arriving, each oversized message is
    counted once, nothing reconnects and memory stays bounded."""
    consumer = Consumer()
    consumer.bus.subscribe("Other", lambda e: None)
    await consumer.start(env)
    channel = f"{env['prefix']}evt:Other"
    big = b"x" * 1_200_000  # over max_frame_bytes (1 MiB) + 64 KiB
    published = 0
    stop = asyncio.Event()

    async def attack() -> None:
        nonlocal published
        while not stop.is_set():
            published += await env["raw"].publish(channel, big)  # receivers: 1
            await asyncio.sleep(0.05)

    total = 400
    peak = 0

    async def work() -> None:
        nonlocal peak
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        attacker = asyncio.get_running_loop().create_task(attack())
        try:
            for n in range(total):
                await consumer.deliver(n)
                await asyncio.sleep(0.005)
            await eventually(lambda: all(n in consumer.sizes for n in range(total)), 20)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            stop.set()  # every publish it made is counted in published
            await attacker

    held = await retained(consumer, work)
    assert published >= 20  # the attack ran all along
    labels = {"transport": "redis", "reason": "oversized"}
    await eventually(
        lambda: env["metrics"].get_sample_value("commbus_wire_rejected_total", labels) == published
    )
    reconnects = env["metrics"].get_sample_value(
        "commbus_transport_reconnects_total", {"transport": "redis"}
    )
    assert not reconnects
    assert held < SLACK, f"{held / 1e6:.1f} MB retained"
    # what this process allocated at the peak, the attacker's own payload included
    assert peak < len(big) + (2 << 20), f"{peak / 1e6:.1f} MB at the peak"
