"""The workloads and clients of the adapter benchmark (``bench_adapters.py``): the message
classes, the counters the consumers bump, one :class:`Side` per client (the adapter over
Redis or NATS, raw redis-py, raw nats-py) and the timed phases. ``bench_rabbitmq.py`` runs
its three clients on the same workloads."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.ipc.adapters import MessageRegistry
from jeeves_control_tower.logging import NullLogger

REDIS_URL = os.environ.get("JT_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("JT_NATS_URL", "nats://127.0.0.1:4222")
PAYLOAD = "x" * 64
#: Latency samples taken from one side before the other side takes as many.
LATENCY_BLOCK = 50


@dataclass
class Tick:
    n: int
    body: str = PAYLOAD
    category: str = field(default="event", init=False)


@dataclass
class Work:
    n: int
    body: str = PAYLOAD
    category: str = field(default="command", init=False)


@dataclass
class Ask:
    n: int
    body: str = PAYLOAD
    category: str = field(default="query", init=False)


REGISTRY = MessageRegistry()
for _cls in (Tick, Work, Ask):
    REGISTRY.register(_cls)
RAW = json.dumps({"n": 1, "body": PAYLOAD}).encode()


class Counter:
    """Counts arrivals; ``wait(n)`` returns when ``n`` arrived."""

    def __init__(self) -> None:
        self.n = 0
        self._target = -1
        self._event = asyncio.Event()

    def hit(self, *_: Any) -> None:
        self.n += 1
        if self.n >= self._target > 0:
            self._event.set()

    async def wait(self, n: int, timeout: float = 60.0) -> None:
        self._target = n
        if self.n >= n:
            return
        self._event.clear()
        await asyncio.wait_for(self._event.wait(), timeout)


async def throughput(
    n: int, window: int, one: Callable[[int], Awaitable[Any]], c: Counter
) -> float:
    """``window == 1``: one awaited call after another (a publish returns before it is
    delivered); otherwise windows of ``window`` concurrent calls."""
    start, base = time.perf_counter(), c.n
    if window == 1:
        for i in range(n):
            await one(i)
    else:
        for i in range(0, n, window):
            await asyncio.gather(*(one(j) for j in range(i, min(n, i + window))))
    await c.wait(base + n)
    return n / (time.perf_counter() - start)


async def latency(n: int, one: Callable[[int], Awaitable[Any]], c: Counter | None) -> list[float]:
    samples = []
    for i in range(n):
        base = c.n if c is not None else 0
        start = time.perf_counter()
        await one(i)
        if c is not None:
            await c.wait(base + 1)
        samples.append(time.perf_counter() - start)
    return samples


def stats(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)
    return {
        "p50_us": round(samples[len(samples) // 2] * 1e6, 1),
        "p99_us": round(samples[int(len(samples) * 0.99)] * 1e6, 1),
        "mean_us": round(statistics.fmean(samples) * 1e6, 1),
    }


# ---------------------------------------------------------------------- the two sides

Op = Callable[[int], Awaitable[Any]]


@dataclass
class Side:
    """What one client (raw or adapter) offers the runner: an operation per pattern, the
    counter its consumer bumps, and how to close it."""

    publish: Op
    events: Counter
    publish_window: int
    send: Op
    commands: Counter
    send_window: int
    query: Op
    close: Callable[[], Awaitable[None]]


async def adapter_side(kind: str) -> Side:
    if kind == "redis":
        from jeeves_control_tower.ipc.adapters.redis import RedisTransport as T

        url, prefix = REDIS_URL, f"bench:{uuid.uuid4().hex[:8]}:"
    else:
        from jeeves_control_tower.ipc.adapters.nats import NatsTransport as T  # type: ignore[assignment]

        url, prefix = NATS_URL, f"bench{uuid.uuid4().hex[:8]}"
    producer, consumer = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)
    events, commands = Counter(), Counter()
    consumer.subscribe("Tick", events.hit)
    consumer.register_handler("Work", commands.hit)
    consumer.register_handler("Ask", lambda q: q.n)
    opts = {"prefix": prefix, "registry": REGISTRY, "metrics": False, "logger": NullLogger()}
    opts["prefetch"] = 100  # the raw consumers read 100 at a time too
    tp = await T.connect(producer, url, **opts)
    tc = await T.connect(consumer, url, **opts)
    await tc.sync()

    async def close() -> None:
        await tp.close()
        await tc.close()
        await cleanup(kind, url, prefix)

    return Side(
        publish=lambda i: producer.publish(Tick(i)),  # returns before delivery: no window
        events=events,
        publish_window=1,
        send=lambda i: producer.send(Work(i)),  # returns once stored: windows of 100
        commands=commands,
        send_window=100,
        query=lambda i: producer.query(Ask(i)),
        close=close,
    )


async def cleanup(kind: str, url: str, prefix: str) -> None:
    if kind == "redis":
        import redis.asyncio as aioredis

        r = aioredis.from_url(url)
        keys = [k async for k in r.scan_iter(match=f"{prefix}*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()
    else:
        import nats

        nc = await nats.connect(url)
        for name in (f"{prefix}_commands", f"{prefix}_dead"):
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(name)
        await nc.close()


async def raw_redis_side() -> Side:
    import redis.asyncio as aioredis

    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    pub, sub = aioredis.from_url(REDIS_URL), aioredis.from_url(REDIS_URL)
    events, replies, commands = Counter(), Counter(), Counter()
    ps = sub.pubsub()
    await ps.subscribe(f"{prefix}evt", f"{prefix}req")
    ps_rep = pub.pubsub()
    await ps_rep.subscribe(f"{prefix}rep")
    stream = f"{prefix}cmd"
    await pub.xgroup_create(stream, "g", id="0", mkstream=True)

    async def reader() -> None:
        async for m in ps.listen():
            if m["type"] != "message":
                continue
            if m["channel"] == f"{prefix}req".encode():
                await sub.publish(f"{prefix}rep", m["data"])
            else:
                events.hit()

    async def reply_reader() -> None:
        async for m in ps_rep.listen():
            if m["type"] == "message":
                replies.hit()

    async def consumer() -> None:
        while True:
            got = await sub.xreadgroup("g", "c", {stream: ">"}, count=100, block=1000)
            # RESP2 (the default) answers [[stream, [(id, fields), ...]], ...]
            assert isinstance(got, list)
            for _, entries in got:
                ids = [e[0] for e in entries]
                for _ in ids:
                    commands.hit()
                await sub.xack(stream, "g", *ids)

    tasks = [asyncio.create_task(t()) for t in (reader, reply_reader, consumer)]

    async def batch(command: str, i: int) -> None:
        """A pipeline of 100 commands: the raw client's way to throughput."""
        pipe = pub.pipeline(transaction=False)
        for _ in range(100):
            if command == "publish":
                pipe.publish(f"{prefix}evt", RAW)
            else:
                pipe.xadd(stream, {"f": RAW})
        await pipe.execute()

    async def query(i: int) -> None:
        base = replies.n
        await pub.publish(f"{prefix}req", RAW)
        await replies.wait(base + 1)

    async def close() -> None:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ps.aclose()
        await ps_rep.aclose()
        await pub.delete(stream)
        await pub.aclose()
        await sub.aclose()

    side = Side(
        publish=lambda i: batch("publish", i),
        events=events,
        publish_window=-100,  # each call sends 100
        send=lambda i: batch("xadd", i),
        commands=commands,
        send_window=-100,
        query=query,
        close=close,
    )
    side.publish_one = lambda i: pub.publish(f"{prefix}evt", RAW)  # type: ignore[attr-defined]
    side.send_one = lambda i: pub.xadd(stream, {"f": RAW})  # type: ignore[attr-defined]
    return side


async def raw_nats_side() -> Side:
    import nats
    from nats.js.api import RetentionPolicy, StorageType

    prefix = f"bench{uuid.uuid4().hex[:8]}"
    nc, nc2 = await nats.connect(NATS_URL), await nats.connect(NATS_URL)
    events, commands = Counter(), Counter()

    async def on_event(msg: Any) -> None:
        events.hit()

    async def on_request(msg: Any) -> None:
        await msg.respond(msg.data)

    await nc2.subscribe(f"{prefix}.evt", cb=on_event)
    await nc2.subscribe(f"{prefix}.req", cb=on_request)
    await nc2.flush()
    js, js2 = nc.jetstream(), nc2.jetstream()
    await js.add_stream(
        name=f"{prefix}_raw",
        subjects=[f"{prefix}.cmd"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
    )
    psub = await js2.pull_subscribe(f"{prefix}.cmd", durable="raw", stream=f"{prefix}_raw")

    async def consumer() -> None:
        while True:
            try:
                msgs = await psub.fetch(100, timeout=1)
            except Exception:  # fetch timeouts and transient JetStream status replies
                continue
            for m in msgs:
                await m.ack()
                commands.hit()

    task = asyncio.create_task(consumer())

    async def close() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await js.delete_stream(f"{prefix}_raw")
        await nc.close()
        await nc2.close()

    return Side(
        publish=lambda i: nc.publish(f"{prefix}.evt", RAW),
        events=events,
        publish_window=1,
        send=lambda i: js.publish(f"{prefix}.cmd", RAW, timeout=30),
        commands=commands,
        send_window=100,
        query=lambda i: nc.request(f"{prefix}.req", RAW, timeout=5),
        close=close,
    )


async def measure_throughput(side: Side, pattern: str, n: int) -> float:
    gc.collect()  # outside the timing: this phase pays only for its own garbage
    op, counter, window = (
        (side.publish, side.events, side.publish_window)
        if pattern == "publish"
        else (side.send, side.commands, side.send_window)
    )
    if window < 0:  # each call carries -window messages
        start, base = time.perf_counter(), counter.n
        for i in range(n // -window):
            await op(i)
        await counter.wait(base + n)
        return n / (time.perf_counter() - start)
    return await throughput(n, window, op, counter)


async def measure_latency(side: Side, pattern: str, n: int) -> list[float]:
    if pattern == "query":
        return await latency(n, side.query, None)
    one = getattr(side, f"{pattern}_one", None) or (
        side.publish if pattern == "publish" else side.send
    )
    return await latency(n, one, side.events if pattern == "publish" else side.commands)
