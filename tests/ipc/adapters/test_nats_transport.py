"""NATS-specific behaviour: hostile frames, redelivery, server restarts, credentials."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import InMemoryCommBus, TransportError
from jeeves_control_tower.ipc.adapters.nats import NatsTransport
from jeeves_control_tower.ipc.adapters.nats.subjects import token
from tests import brokers
from tests.conformance.conftest import eventually, nats_cleanup
from tests.conformance.messages import REGISTRY, Ask, DoWork, Happened
from tests.helpers import ListLogger

pytestmark = pytest.mark.nats


@pytest.fixture
async def env() -> AsyncIterator[dict[str, Any]]:
    import nats

    url = brokers.require(brokers.NATS_URL, "NATS")
    prefix = brokers.unique("jttest")
    raw = await nats.connect(url)
    transports: list[NatsTransport] = []
    reg = CollectorRegistry()

    async def connect(bus: InMemoryCommBus, **kw: Any) -> NatsTransport:
        kw.setdefault("registry", REGISTRY)
        kw.setdefault("metrics_registry", reg)
        t = await NatsTransport.connect(bus, url, prefix=prefix, **kw)
        transports.append(t)
        return t

    yield {"url": url, "prefix": prefix, "raw": raw, "connect": connect, "metrics": reg}
    for t in transports:
        await t.close()
    await raw.close()
    await nats_cleanup(url, prefix)


def test_subject_tokens_are_safe_and_distinct() -> None:
    assert token("OrderPlaced") == "OrderPlaced"
    assert token("order.created") == "order_2ecreated"
    assert token("a b>*") == "a_20b_3e_2a"
    assert token("x_y") != token("x.y")
    assert token("é") == "_c3_a9"


async def test_hostile_frames_never_stop_a_consumer(env: dict[str, Any]) -> None:
    bus = InMemoryCommBus(instrument=False)
    t = await env["connect"](bus, logger=ListLogger())
    events: list[int] = []
    commands: list[int] = []
    bus.subscribe("Happened", lambda e: events.append(e.n))
    bus.register_handler("DoWork", lambda c: commands.append(c.n))
    bus.register_handler("Ask", lambda q: q.n)
    await t.sync()
    raw, js = env["raw"], env["raw"].jetstream()
    for junk in (b"\xff\x00garbage", b"[]", b"{" * 5000):
        await raw.publish(t.destination("publish", "Happened"), junk)
        await js.publish(t.destination("send", "DoWork"), junk)
    reply = await raw.request(t.destination("query", "Ask"), b"not a frame", timeout=2)
    assert b'"ok":false' in reply.data and b"rejected" in reply.data
    await bus.publish(Happened(1))
    await bus.send(DoWork(2))
    await eventually(lambda: events == [1] and commands == [2])
    labels = {"transport": "nats", "reason": "malformed"}
    assert env["metrics"].get_sample_value("commbus_wire_rejected_total", labels) >= 7
    info = await js.stream_info(t.dead_stream)
    assert info.state.messages == 3
    assert await bus.query(Ask(5)) == 5


async def test_an_unacknowledged_command_is_redelivered(env: dict[str, Any]) -> None:
    a, b = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)
    started = asyncio.Event()

    async def hang(cmd: DoWork) -> None:
        started.set()
        await asyncio.sleep(3600)

    a.register_handler("DoWork", hang)
    ta = await env["connect"](a, ack_wait=1.0)
    await a.send(DoWork(1))
    await asyncio.wait_for(started.wait(), 5)
    consumer = ta._consumers["DoWork"]
    assert consumer._task is not None
    consumer._task.cancel()  # the process "dies" mid-command: no ack, no progress
    handled: list[int] = []
    b.register_handler("DoWork", lambda c: handled.append(c.n))
    await env["connect"](b, ack_wait=1.0)
    await eventually(lambda: handled == [1], timeout=10)
    labels = {"transport": "nats"}
    assert env["metrics"].get_sample_value("commbus_transport_redeliveries_total", labels) == 1


@pytest.mark.slow
async def test_server_restart_mid_stream_loses_nothing() -> None:
    with brokers.NatsServer() as server:
        producer, consumer = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)
        handled: list[int] = []
        consumer.register_handler("DoWork", lambda c: handled.append(c.n))
        opts: dict[str, Any] = {"registry": REGISTRY, "metrics": False, "ack_wait": 2.0}
        tp = await NatsTransport.connect(producer, server.url, send_timeout=20, **opts)
        tc = await NatsTransport.connect(consumer, server.url, **opts)
        try:
            for i in range(30):
                await producer.send(DoWork(i))
            server.stop(signal.SIGKILL)

            async def restart_soon() -> None:
                await asyncio.sleep(0.5)
                server.start()

            restarting = asyncio.create_task(restart_soon())
            for i in range(30, 60):
                await producer.send(DoWork(i))  # waits for the server, then is stored
            await restarting
            await eventually(lambda: set(range(60)) <= set(handled), timeout=20)
        finally:
            await tp.close()
            await tc.close()


async def test_send_fails_loudly_when_the_server_stays_away() -> None:
    with brokers.NatsServer() as server:
        bus = InMemoryCommBus(instrument=False)
        t = await NatsTransport.connect(
            bus, server.url, registry=REGISTRY, metrics=False, send_timeout=0.5
        )
        try:
            server.stop()
            with pytest.raises(TransportError, match="did not acknowledge"):
                await bus.send(DoWork(1))
            with pytest.raises(TransportError):
                await bus.query(Ask(1), timeout=0.5)
        finally:
            await t.close()


async def test_credentials_are_used_but_never_logged() -> None:
    class AuthServer(brokers.NatsServer):
        def args(self) -> list[str]:
            return [*super().args(), "--user", "app", "--pass", "s3cr3t-pw"]

    with AuthServer() as server:
        logger = ListLogger()
        url = server.url.replace("nats://", "nats://app:s3cr3t-pw@")
        bus = InMemoryCommBus(instrument=False)
        t = await NatsTransport.connect(bus, url, registry=REGISTRY, metrics=False, logger=logger)
        assert "s3cr3t" not in t.url
        bus.register_handler("Ask", lambda q: q.n)
        await t.sync()
        assert await bus.query(Ask(3)) == 3
        await t.close()
        with pytest.raises(TransportError) as info:
            await NatsTransport.connect(
                InMemoryCommBus(instrument=False),
                url.replace("s3cr3t-pw", "wrong-pw"),
                logger=logger,
                connect_options={"max_reconnect_attempts": 0, "allow_reconnect": False},
            )
        assert "wrong-pw" not in str(info.value)
        assert all("s3cr3t" not in f"{m} {f}" for _, m, f in logger.records)
