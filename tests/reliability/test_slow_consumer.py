"""A slow command consumer over a broker: bounded memory, nothing lost.

A producer sends commands far faster than a deliberately slow handler can take them. The
backlog must stay in the broker (the stream grows), while the consumer holds at most
``prefetch`` commands at a time: the commands the broker delivered to it and it has not
finished with yet, sampled both from inside the handler and by a concurrent poller. Every
command is eventually handled, exactly once (one live consumer, nothing redelivered), and
the broker is left empty.

How "in hand" is measured, per broker:

- Redis: ``XPENDING`` of the consumer group (delivered, not acknowledged). Exact: the
  consumer awaits its ``XACK`` before it reads the next batch, and Redis applies commands
  in order.
- NATS: the durable consumer's count of deliveries (``delivered.consumer_seq``, counted
  by the server as it hands messages out) minus the commands the handler has finished,
  read *after* the server's answer. Not the server's ``num_ack_pending``: nats-py
  acknowledges without waiting and JetStream processes acknowledgements asynchronously,
  so that count lags behind by however many acknowledgements are still in the server's
  queue (``prefetch + 1`` was seen in about 1 run in 3 on a loaded machine). The
  difference used here cannot lag in the consumer's favour: a delivery counted at the
  server's sample time belongs to a pull the consumer sent after finishing every command
  of the batches before it, and the finished count only grows between the server's
  answer and the test reading it. A consumer that pulls more than ``prefetch`` at once,
  or pulls again before finishing its batch, shows up as more than ``prefetch``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.testing import eventually
from jeeves_control_tower.testing.messages import REGISTRY, DoWork
from tests import brokers
from tests.conformance.conftest import nats_cleanup

PREFETCH = 4
HANDLER_DELAY = 0.003


async def _run_slow_consumer(
    producer: InMemoryCommBus,
    consumer: InMemoryCommBus,
    sync: Callable[[], Awaitable[None]],
    in_hand: Callable[[], Awaitable[int]],
    backlog: Callable[[], Awaitable[int]],
    count: int,
    handled: Counter[int],
) -> None:
    """``handled`` counts the commands the slow handler finished (``in_hand`` may use it)."""
    peaks = {"in_hand": 0, "backlog": 0}

    async def sample() -> None:
        peaks["in_hand"] = max(peaks["in_hand"], await in_hand())
        peaks["backlog"] = max(peaks["backlog"], await backlog())

    async def slow(cmd: DoWork) -> None:
        await sample()  # while this command (and the rest of its batch) is in hand
        await asyncio.sleep(HANDLER_DELAY)
        handled[cmd.n] += 1

    consumer.register_handler("DoWork", slow)
    await sync()

    stop = asyncio.Event()

    async def poll() -> None:
        # Stopped by a flag, not by cancel(): on Python 3.11 nats-py's request can swallow a
        # cancellation that lands as its reply arrives (asyncio.wait_for), and the poller
        # would then run forever.
        while not stop.is_set():
            await sample()
            await asyncio.sleep(0.002)

    poller = asyncio.get_running_loop().create_task(poll())
    try:
        for n in range(count):  # as fast as the broker takes them
            await producer.send(DoWork(n))
        sent_backlog = await backlog()
        await eventually(lambda: len(handled) == count, timeout=60.0)
        await eventually(lambda: True)  # let the last acknowledgement go out
    finally:
        stop.set()
        await asyncio.wait_for(poller, timeout=10.0)
    # the producer outran the consumer: the backlog waited in the broker ...
    assert max(sent_backlog, peaks["backlog"]) > 10 * PREFETCH, peaks
    # ... while the consumer never held more than prefetch commands (and did fill batches)
    assert peaks["in_hand"] == PREFETCH, peaks
    # nothing lost, nothing handled twice
    assert sorted(handled) == list(range(count))
    assert set(handled.values()) == {1}

    async def drained() -> bool:
        return await in_hand() == 0 and await backlog() == 0

    for _ in range(250):
        if await drained():
            break
        await asyncio.sleep(0.02)
    assert await drained(), "the broker still holds commands after everything was handled"


@pytest.mark.redis
async def test_slow_redis_consumer_holds_at_most_prefetch_and_loses_nothing() -> None:
    import redis.asyncio as aioredis

    from jeeves_control_tower.ipc.adapters.redis import RedisTransport

    url = brokers.require(brokers.REDIS_URL, "Redis")
    prefix = brokers.unique("jt:slow:") + ":"
    raw = aioredis.from_url(url)
    producer, consumer = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)
    options: dict[str, Any] = {"prefix": prefix, "registry": REGISTRY, "metrics": False}
    tp = await RedisTransport.connect(producer, url, **options)
    tc = await RedisTransport.connect(consumer, url, prefetch=PREFETCH, **options)
    stream = tc.destination("send", "DoWork")

    async def in_hand() -> int:
        with contextlib.suppress(Exception):  # the group is created by the consumer
            return int((await raw.xpending(stream, "handlers"))["pending"])
        return 0

    async def backlog() -> int:
        return int(await raw.xlen(stream))

    try:
        await _run_slow_consumer(
            producer, consumer, tc.sync, in_hand, backlog, count=300, handled=Counter()
        )
    finally:
        await tc.close()
        await tp.close()
        keys = [k async for k in raw.scan_iter(match=f"{prefix}*")]
        if keys:
            await raw.delete(*keys)
        await raw.aclose()


@pytest.mark.nats
async def test_slow_nats_consumer_holds_at_most_prefetch_and_loses_nothing() -> None:
    import nats
    from nats.js.errors import NotFoundError

    from jeeves_control_tower.ipc.adapters.nats import NatsTransport

    url = brokers.require(brokers.NATS_URL, "NATS")
    prefix = brokers.unique("jtslow")
    nc = await nats.connect(url)
    js = nc.jetstream()
    producer, consumer = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)
    options: dict[str, Any] = {"prefix": prefix, "registry": REGISTRY, "metrics": False}
    tp = await NatsTransport.connect(producer, url, **options)
    tc = await NatsTransport.connect(consumer, url, prefetch=PREFETCH, **options)

    handled: Counter[int] = Counter()

    async def info() -> Any:
        try:
            return await js.consumer_info(tc.stream, "cmd_DoWork")
        except NotFoundError:  # sync() does not wait for the durable to be created
            return None

    async def in_hand() -> int:
        """Delivered by the server and not finished by the handler (see the docstring)."""
        i = await info()
        delivered = int(i.delivered.consumer_seq) if i is not None else 0
        return delivered - handled.total()  # read after the server's answer

    async def backlog() -> int:
        """Not yet acknowledged as the server sees it: unacknowledged plus undelivered."""
        i = await info()
        return int(i.num_ack_pending) + int(i.num_pending) if i is not None else 0

    try:
        await _run_slow_consumer(
            producer, consumer, tc.sync, in_hand, backlog, count=200, handled=handled
        )
    finally:
        await tc.close()
        await tp.close()
        await nc.close()
        await nats_cleanup(url, prefix)
