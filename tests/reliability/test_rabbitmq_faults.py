"""RabbitMQ faults with real OS processes.

- The private broker (:class:`tests.brokers.RabbitMQServer`, its own node, ports and
  directories) is stopped (SIGTERM) and restarted in the middle of a stream of commands
  while a
  consumer process works through them: no ``send`` raises (each retries until RabbitMQ
  confirmed it), every command is handled, and the consumer process reconnects by itself.
  (Not yet covered: a SIGKILLed node. A private node restarted after SIGKILL of its
  process group accepted connections here but confirmed no publish, even from a fresh
  client, so that case tests the test broker, not the transport.)
- While the private broker is down, events wait in a bounded buffer (beyond it
  ``publish`` raises), queries fail at once, and the buffer goes out on reconnect;
  events and queries then work again without restarting anything.
- A consumer process is SIGKILLed while its handler is inside a command: the command
  (never acknowledged) is redelivered to another live consumer process. No broker fault
  is involved, so this one runs on the shared broker (an Erlang node takes seconds to
  start: the tests on a private one are kept few).
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import InMemoryCommBus, TransportError
from jeeves_control_tower.ipc.adapters.rabbitmq import RabbitMQTransport
from jeeves_control_tower.testing import eventually
from jeeves_control_tower.testing.messages import REGISTRY, Ask, DoWork, Happened
from tests import brokers
from tests.ipc.adapters.cluster import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq]

PATIENCE = 60.0


async def test_broker_restarted_mid_stream_loses_no_command() -> None:
    with brokers.RabbitMQServer() as server:
        cluster = Cluster("rabbitmq", server.url)
        try:
            consumer = await cluster.spawn("consumer")
            producer = await cluster.bus()
            for i in range(100):
                await producer.send(DoWork(i))
            await eventually(lambda: len(consumer.values("handled")) >= 20, timeout=PATIENCE)

            async def rest() -> None:
                for i in range(100, 200):
                    await producer.send(DoWork(i))

            sending = asyncio.create_task(rest())  # sends in flight through the outage
            await asyncio.sleep(0.05)
            await asyncio.to_thread(server.restart, signal.SIGTERM)
            await asyncio.wait_for(sending, PATIENCE)  # each send retried until confirmed

            def missing() -> set[int]:
                return set(range(200)) - set(consumer.values("handled"))

            await eventually(lambda: not missing(), timeout=PATIENCE)
            assert consumer.alive
        finally:
            await cluster.close()


async def test_a_consumer_process_killed_mid_command_is_redelivered_to_another() -> None:
    cluster = Cluster("rabbitmq", brokers.require(brokers.RABBITMQ_URL, "RabbitMQ"))
    try:
        doomed = await cluster.spawn("consumer", hang_on=5)
        producer = await cluster.bus()
        for i in range(10):
            await producer.send(DoWork(i))
        await eventually(lambda: doomed.values("started") == [5], timeout=PATIENCE)
        survivor = await cluster.spawn("consumer")
        doomed.kill()  # SIGKILL while its handler is inside command 5
        assert await asyncio.wait_for(doomed.proc.wait(), PATIENCE) == -signal.SIGKILL
        for i in range(10, 20):
            await producer.send(DoWork(i))

        def done() -> set[int]:
            return set(doomed.values("handled")) | set(survivor.values("handled"))

        await eventually(lambda: done() == set(range(20)), timeout=PATIENCE)
        assert 5 in survivor.values("handled") and 5 not in doomed.values("handled")
        assert survivor.alive
    finally:
        await cluster.close()
        await cluster.cleanup()


async def test_while_the_broker_is_down_events_wait_in_a_bounded_buffer() -> None:
    with brokers.RabbitMQServer() as server:
        producer, consumer = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)
        seen: list[int] = []
        consumer.subscribe("Happened", lambda e: seen.append(e.n))
        consumer.register_handler("Ask", lambda q: q.n * 2)
        opts: dict[str, Any] = {"registry": REGISTRY, "metrics": False}
        tc = await RabbitMQTransport.connect(consumer, server.url, **opts)
        gauge = CollectorRegistry()
        tp = await RabbitMQTransport.connect(
            producer,
            server.url,
            buffer_size=5,
            registry=REGISTRY,
            metrics_registry=gauge,
        )

        def held() -> float | None:
            labels = {"transport": "rabbitmq"}
            return gauge.get_sample_value("commbus_transport_buffered_messages", labels)

        try:
            await tc.sync()
            await asyncio.to_thread(server.stop)
            await eventually(lambda: tp.connection.connected.is_set() is False, timeout=10)
            for i in range(5):
                await producer.publish(Happened(i))  # held for the reconnect
            with pytest.raises(TransportError, match="buffer is full"):
                await producer.publish(Happened(5))
            await eventually(lambda: held() == 5, timeout=10)  # the gauge shows them
            with pytest.raises(TransportError, match="unreachable"):
                await producer.query(Ask(1))  # queries fail at once meanwhile
            await asyncio.to_thread(server.start)
            await asyncio.wait_for(tp.flush(), PATIENCE)  # the buffer went out on reconnect
            assert held() == 0
            await eventually(lambda: tc.connection.connected.is_set(), timeout=PATIENCE)
            await tc.sync()

            async def delivered() -> None:
                while 100 not in seen:
                    await producer.publish(Happened(100))  # restored bindings deliver again
                    await asyncio.sleep(0.2)

            await asyncio.wait_for(delivered(), PATIENCE)
            # Queries again: the responder's queue and the caller's reply-to are restored.
            assert await producer.query(Ask(21), timeout=10) == 42
        finally:
            await tp.close()
            await tc.close()
