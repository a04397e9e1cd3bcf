"""The project's transports run the public conformance suite, each through a subclass.

In-process bus, Redis, NATS and RabbitMQ (against the real brokers), the gRPC hub (a
private hub per test) and :class:`TestTransport`:
exactly what a third-party transport would write (see docs/testing.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.ipc.adapters import MessageRegistry
from jeeves_control_tower.testing import TestBroker, TestTransport
from jeeves_control_tower.testing.conformance import (
    IN_MEMORY,
    ConnectedTransport,
    TransportConformance,
    TransportUnderTest,
)
from tests import brokers

from .conftest import nats_cleanup, rabbitmq_cleanup, redis_cleanup


class TestInMemoryConformance(TransportConformance):
    @pytest.fixture
    def transport_under_test(self) -> TransportUnderTest:
        return TransportUnderTest(IN_MEMORY, None)


class TestTestTransportConformance(TransportConformance):
    @pytest.fixture
    def transport_under_test(self) -> TransportUnderTest:
        broker = TestBroker()

        async def connect(bus: InMemoryCommBus, registry: MessageRegistry) -> ConnectedTransport:
            return await TestTransport.connect(bus, broker=broker, registry=registry)

        return TransportUnderTest(TestTransport.features, connect)


@pytest.mark.redis
class TestRedisConformance(TransportConformance):
    @pytest_asyncio.fixture
    async def transport_under_test(self) -> AsyncIterator[TransportUnderTest]:
        from jeeves_control_tower.ipc.adapters.redis import RedisTransport

        url = brokers.require(brokers.REDIS_URL, "Redis")
        prefix = brokers.unique("jt:test:") + ":"

        async def connect(bus: InMemoryCommBus, registry: MessageRegistry) -> ConnectedTransport:
            return await RedisTransport.connect(
                bus, url, prefix=prefix, registry=registry, metrics=False, min_idle=2.0
            )

        try:
            yield TransportUnderTest(RedisTransport.features, connect)
        finally:
            await redis_cleanup(url, prefix)


@pytest.mark.nats
class TestNatsConformance(TransportConformance):
    @pytest_asyncio.fixture
    async def transport_under_test(self) -> AsyncIterator[TransportUnderTest]:
        from jeeves_control_tower.ipc.adapters.nats import NatsTransport

        url = brokers.require(brokers.NATS_URL, "NATS")
        prefix = brokers.unique("jttest")

        async def connect(bus: InMemoryCommBus, registry: MessageRegistry) -> ConnectedTransport:
            return await NatsTransport.connect(
                bus, url, prefix=prefix, registry=registry, metrics=False, ack_wait=2.0
            )

        try:
            yield TransportUnderTest(NatsTransport.features, connect)
        finally:
            await nats_cleanup(url, prefix)


class TestGrpcConformance(TransportConformance):
    """Every "process" joins one private hub; the hub's own bus takes part too."""

    @pytest_asyncio.fixture
    async def transport_under_test(self) -> AsyncIterator[TransportUnderTest]:
        from jeeves_control_tower.ipc.adapters.grpc import GrpcTransport, serve_grpc

        hub = await serve_grpc(InMemoryCommBus(instrument=False), port=0, metrics=False)

        async def connect(bus: InMemoryCommBus, registry: MessageRegistry) -> ConnectedTransport:
            return await GrpcTransport.connect(bus, hub.address, registry=registry, metrics=False)

        try:
            yield TransportUnderTest(GrpcTransport.features, connect)
        finally:
            await hub.close(grace=0)


@pytest.mark.rabbitmq
class TestRabbitMQConformance(TransportConformance):
    @pytest_asyncio.fixture
    async def transport_under_test(self) -> AsyncIterator[TransportUnderTest]:
        from jeeves_control_tower.ipc.adapters.rabbitmq import RabbitMQTransport

        url = brokers.require(brokers.RABBITMQ_URL, "RabbitMQ")
        prefix = brokers.unique("jttest")
        connected: list[RabbitMQTransport] = []

        async def connect(bus: InMemoryCommBus, registry: MessageRegistry) -> ConnectedTransport:
            t = await RabbitMQTransport.connect(
                bus, url, prefix=prefix, registry=registry, metrics=False
            )
            connected.append(t)
            return t

        try:
            yield TransportUnderTest(RabbitMQTransport.features, connect)
        finally:
            await rabbitmq_cleanup(url, set().union(*(t.topology.durable for t in connected)))
