"""One harness per transport: in-memory, Redis, NATS.

A test asks for ``harness`` and gets a :class:`Harness` for each transport in turn (the
broker ones marked ``redis`` / ``nats``, run against the real brokers). ``harness.bus()``
makes a bus as another process would have it: for the in-memory bus that is always the
same bus; for a broker, a new bus with its own transport on a prefix unique to the test.
What a transport guarantees is in ``harness.features``; tests branch on it, never on the
transport's name.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.ipc.adapters import BrokerTransport, MessageRegistry, TransportFeatures
from tests import brokers

from .messages import REGISTRY

IN_MEMORY = TransportFeatures(
    "memory",
    cross_process=False,
    publish_awaits_subscribers=True,
    durable_send=False,
    send_waits_for_handler=False,
    query_preserves_exception_type=True,
)


@dataclass
class Harness:
    features: TransportFeatures
    make_transport: Callable[[InMemoryCommBus], Any] | None
    registry: MessageRegistry = field(default_factory=lambda: REGISTRY)
    transports: list[BrokerTransport] = field(default_factory=list)
    _shared: InMemoryCommBus | None = None

    async def bus(self) -> InMemoryCommBus:
        """A bus "in another process" (the same one for the in-memory transport)."""
        if self.make_transport is None:
            if self._shared is None:
                self._shared = InMemoryCommBus(query_timeout=5.0, instrument=False)
            return self._shared
        bus = InMemoryCommBus(query_timeout=5.0, instrument=False)
        self.transports.append(await self.make_transport(bus))
        return bus

    async def sync(self) -> None:
        """Wait until every bus's registrations are in effect on the broker."""
        for transport in self.transports:
            await transport.sync()

    async def close(self) -> None:
        for transport in self.transports:
            await transport.close()


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``check()`` holds (a broker delivers asynchronously)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def _redis_harness() -> AsyncIterator[Harness]:
    from jeeves_control_tower.ipc.adapters.redis import RedisTransport

    url = brokers.require(brokers.REDIS_URL, "Redis")
    prefix = brokers.unique("jt:test:") + ":"

    async def make(bus: InMemoryCommBus) -> Any:
        return await RedisTransport.connect(
            bus, url, prefix=prefix, registry=REGISTRY, metrics=False, min_idle=2.0
        )

    harness = Harness(RedisTransport.features, make)
    try:
        yield harness
    finally:
        await harness.close()
        await _redis_cleanup(url, prefix)


async def _redis_cleanup(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def _nats_harness() -> AsyncIterator[Harness]:
    from jeeves_control_tower.ipc.adapters.nats import NatsTransport

    url = brokers.require(brokers.NATS_URL, "NATS")
    prefix = brokers.unique("jttest")

    async def make(bus: InMemoryCommBus) -> Any:
        return await NatsTransport.connect(
            bus, url, prefix=prefix, registry=REGISTRY, metrics=False, ack_wait=2.0
        )

    harness = Harness(NatsTransport.features, make)
    try:
        yield harness
    finally:
        await harness.close()
        await nats_cleanup(url, prefix)


async def nats_cleanup(url: str, prefix: str) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for name in (f"{prefix}_commands", f"{prefix}_dead"):
            with contextlib.suppress(Exception):
                await js.delete_stream(name)
    finally:
        await nc.close()


@pytest.fixture(
    params=[
        pytest.param("memory"),
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("nats", marks=pytest.mark.nats),
    ]
)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        yield Harness(IN_MEMORY, None)
        return
    factory = _redis_harness if request.param == "redis" else _nats_harness
    async for h in factory():
        yield h
