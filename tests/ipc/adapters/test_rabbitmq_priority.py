"""Dispatch priorities cross processes on RabbitMQ: a saturated remote service's backlog
waits in the broker's priority queue and is served highest priority first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from jeeves_control_tower.ipc import CommBusCoordinator
from jeeves_control_tower.ipc.adapters.rabbitmq import RabbitMQTransport
from jeeves_control_tower.ipc.adapters.services import RemoteServices
from jeeves_control_tower.logging import NullLogger
from jeeves_control_tower.testing import eventually
from jeeves_control_tower.types import (
    DispatchTarget,
    Envelope,
    RequestContext,
    SchedulingPriority,
)
from tests import brokers
from tests.ipc.adapters.cluster import Cluster

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    c = Cluster("rabbitmq", brokers.require(brokers.RABBITMQ_URL, "RabbitMQ"))
    try:
        yield c
    finally:
        await c.close()
        await c.cleanup()


async def test_a_realtime_dispatch_overtakes_queued_low_ones_across_processes(
    cluster: Cluster,
) -> None:
    server = await cluster.spawn("slow_service", sleep=0.3)
    bus = await cluster.bus()
    transport = bus.transport
    assert isinstance(transport, RabbitMQTransport)
    coordinator = CommBusCoordinator(NullLogger(), bus, instrument=False)
    services = await RemoteServices(coordinator, transport, interval=0.2).start()
    try:
        await eventually(lambda: services.is_mirror("slow"), timeout=10)

        async def dispatch(tag: str, priority: SchedulingPriority) -> str:
            envelope = Envelope(
                RequestContext(request_id=tag, capability="t"), metadata={"tag": tag}
            )
            target = DispatchTarget("slow", "run", priority=priority, timeout_seconds=20)
            done = await coordinator.dispatch(target, envelope)
            assert not done.terminated, done.errors
            return tag

        first = asyncio.create_task(dispatch("low-0", SchedulingPriority.LOW))
        await eventually(lambda: server.values("serving") == ["low-0"], timeout=10)
        # The service is busy with low-0: these wait in the broker, in its priority queue.
        lows = [
            asyncio.create_task(dispatch(f"low-{i}", SchedulingPriority.LOW)) for i in range(1, 5)
        ]
        await asyncio.sleep(0.1)  # queued behind them, in time
        urgent = asyncio.create_task(dispatch("realtime", SchedulingPriority.REALTIME))
        await asyncio.wait_for(asyncio.gather(first, urgent, *lows), 30)
        served = server.values("serving")
        assert served[:2] == ["low-0", "realtime"], served
        assert sorted(served[2:]) == [f"low-{i}" for i in range(1, 5)]
    finally:
        await services.close()
