"""NATS-specific behaviour: hostile frames, redelivery, server restarts, credentials."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import InMemoryCommBus, TransportError
from jeeves_control_tower.ipc.adapters import RemoteError
from jeeves_control_tower.ipc.adapters.nats import NatsTransport
from jeeves_control_tower.ipc.adapters.nats.subjects import token
from jeeves_control_tower.testing import eventually
from jeeves_control_tower.testing.messages import REGISTRY, Ask, DoWork, Happened
from tests import brokers
from tests.conformance.conftest import nats_cleanup
from tests.helpers import ListLogger

from .wire_counts import check_wire_counts

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
    await ta.client.close()  # the process "dies" mid-command: no ack, no progress
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


async def test_a_reply_over_the_servers_max_payload_is_an_error_not_a_timeout() -> None:
    """The server would refuse a reply above its ``max_payload``: the caller is told so at
    once (``RemoteError``) instead of waiting out its timeout."""

    class SmallPayloadServer(brokers.NatsServer):
        def args(self) -> list[str]:
            conf = f"{self.dir}/small.conf"
            with open(conf, "w") as f:
                f.write("max_payload: 262144\n")
            return [*super().args(), "-c", conf]

    with SmallPayloadServer() as server:
        asker, answerer = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)
        answerer.register_handler("Ask", lambda q: "x" * q.n)
        options: dict[str, Any] = {"registry": REGISTRY, "metrics": False}
        t1 = await NatsTransport.connect(asker, server.url, **options)
        t2 = await NatsTransport.connect(answerer, server.url, **options)
        try:
            await t2.sync()
            assert await asker.query(Ask(1000), timeout=5) == "x" * 1000
            started = time.monotonic()
            with pytest.raises(RemoteError, match="max_payload"):
                await asker.query(Ask(300_000), timeout=5)
            assert time.monotonic() - started < 2.5
        finally:
            await t1.close()
            await t2.close()


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
            )
        assert "wrong-pw" not in str(info.value)
        assert all("s3cr3t" not in f"{m} {f}" for _, m, f in logger.records)


class _AuthNats(brokers.NatsServer):
    """A private ``nats-server`` that wants a user/password, or a token."""

    def __init__(self, *auth: str) -> None:
        super().__init__()
        self.auth = list(auth)

    def args(self) -> list[str]:
        return [*super().args(), *self.auth]


async def _connect_fails_fast(url: str, *, within: float, **options: Any) -> TransportError:
    """``NatsTransport.connect`` with the default reconnect policy raises promptly."""
    bus = InMemoryCommBus(instrument=False)
    logger = ListLogger()
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        # The outer timeout only keeps a regression (retrying forever) from hanging.
        await asyncio.wait_for(
            NatsTransport.connect(
                bus, url, registry=REGISTRY, metrics=False, logger=logger, **options
            ),
            timeout=30,
        )
    assert time.monotonic() - started < within
    assert bus.transport is None
    return info.value


async def test_first_connect_fails_fast_on_a_refused_login() -> None:
    # Regression: with the default options (reconnect forever) nats-py retried a refused
    # login forever and connect never returned.
    with _AuthNats("--user", "app", "--pass", "right-pw") as server:
        url = server.url.replace("nats://", "nats://app:wrong-pw@")
        error = await _connect_fails_fast(url, within=5)
        text = str(error)
        assert f"127.0.0.1:{server.port}" in text and "***" in text
        assert "Authorization" in text and "wrong-pw" not in text and "app:" not in text


async def test_first_connect_fails_fast_on_a_wrong_token() -> None:
    with _AuthNats("--auth", "right-token") as server:
        error = await _connect_fails_fast(
            server.url, within=5, connect_options={"token": "wrong-token"}
        )
        assert "Authorization" in str(error) and "wrong-token" not in str(error)


async def test_first_connect_fails_fast_when_nothing_listens() -> None:
    port = brokers.free_port()  # closed again at once: connections are refused
    error = await _connect_fails_fast(f"nats://app:pw@127.0.0.1:{port}", within=5)
    assert f"127.0.0.1:{port}" in str(error) and "ConnectionRefusedError" in str(error)
    assert "pw" not in str(error).replace("***", "")


async def test_first_connect_fails_fast_when_the_server_never_answers() -> None:
    # Accepts the TCP connection, never sends INFO: bounded by connect_timeout.
    accepted: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        error = await _connect_fails_fast(
            f"nats://127.0.0.1:{port}", within=6, connect_options={"connect_timeout": 1}
        )
        assert f"127.0.0.1:{port}" in str(error) and "Timeout" in str(error)
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_after_the_first_connect_a_restart_is_survived_by_default() -> None:
    # Fail-fast applies to the first connect only: the reconnect policy is restored.
    with brokers.NatsServer() as server:
        reg = CollectorRegistry()
        pub, sub = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)
        seen: list[int] = []
        sub.subscribe("Happened", lambda e: seen.append(e.n))
        opts: dict[str, Any] = {"registry": REGISTRY, "metrics_registry": reg}
        tp = await NatsTransport.connect(pub, server.url, **opts)
        ts = await NatsTransport.connect(sub, server.url, **opts)
        try:
            assert tp.client.options["allow_reconnect"] is True
            assert tp.client.options["max_reconnect_attempts"] == -1
            for _ in range(200):  # core NATS: until the subscriber's SUB reached the server
                await pub.publish(Happened(1))
                await tp.flush()
                await asyncio.sleep(0.05)
                if seen:
                    break
            await eventually(lambda: bool(seen), timeout=10)
            assert set(seen) == {1}
            server.restart(signal.SIGKILL)
            labels = {"transport": "nats"}
            await eventually(
                lambda: (
                    (reg.get_sample_value("commbus_transport_reconnects_total", labels) or 0) >= 2
                ),
                timeout=30,
            )
            for _ in range(400):  # until the subscription is renewed on the new server
                await pub.publish(Happened(2))
                await tp.flush()
                await asyncio.sleep(0.05)
                if 2 in seen:
                    break
            assert 2 in seen and set(seen) == {1, 2}, seen
        finally:
            await tp.close()
            await ts.close()


async def test_wire_messages_are_counted_per_direction_and_pattern(env: dict[str, Any]) -> None:
    await check_wire_counts(env, "nats")


async def test_events_go_straight_to_an_ordered_worker_bounded_as_documented(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The direct path (DirectClient.route -> OrderedPump) keeps the documented contract:
    # in order per type, at most _PENDING waiting behind a slow subscriber, the excess
    # dropped and reported as a slow consumer (logged), later events delivered again.
    from jeeves_control_tower.ipc.adapters.nats import transport as nats_transport
    from jeeves_control_tower.ipc.adapters.nats.client import DIRECT_SUPPORTED

    assert DIRECT_SUPPORTED, "the installed nats-py lost the hook: events take the slow path"
    monkeypatch.setattr(nats_transport, "_PENDING", 50)
    producer, consumer = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)
    gate = asyncio.Event()
    seen: list[int] = []

    async def on_event(e: Happened) -> None:
        await gate.wait()
        seen.append(e.n)

    consumer.subscribe("Happened", on_event)
    logger = ListLogger()
    tc = await env["connect"](consumer, logger=logger)
    tp = await env["connect"](producer)
    assert tc.reads_directly("Happened")
    for i in range(200):
        await producer.publish(Happened(i))
        await asyncio.sleep(0)  # one loop iteration per event: one NATS message each
    await tp.flush()
    await eventually(lambda: any("nats_error" in m for _, m, _ in logger.records))
    gate.set()
    await eventually(lambda: len(seen) >= 50)
    await asyncio.sleep(0.2)
    assert 50 <= len(seen) < 200 and seen == sorted(seen)  # in order, excess dropped
    assert any("SlowConsumer" in str(f) for _, m, f in logger.records if m == "nats_error")
    await producer.publish(Happened(1000))
    await eventually(lambda: seen[-1] == 1000)


async def test_events_still_arrive_when_the_direct_path_is_unavailable(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another nats-py without the _process_msg hook: ordinary callback subscriptions.
    from jeeves_control_tower.ipc.adapters.nats import client

    monkeypatch.setattr(client, "DIRECT_SUPPORTED", False)
    producer, consumer = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)
    seen: list[int] = []
    consumer.subscribe("Happened", lambda e: seen.append(e.n))
    tc = await env["connect"](consumer)
    await env["connect"](producer)
    assert not tc.reads_directly("Happened")
    for i in range(20):
        await producer.publish(Happened(i))
    await eventually(lambda: seen == list(range(20)))
    consumer.register_handler("Ask", lambda q: q.n * 2)  # queries: the callback path
    await tc.sync()
    assert await producer.query(Ask(21), timeout=5) == 42


async def test_queries_run_at_most_max_concurrency_at_once_the_rest_wait_in_order(
    env: dict[str, Any],
) -> None:
    producer, consumer = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)
    running, peak, started = 0, 0, []

    async def answer(q: Ask) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        started.append(q.n)
        await asyncio.sleep(0.05)
        running -= 1
        return q.n

    consumer.register_handler("Ask", answer)
    tc = await env["connect"](consumer, max_concurrency=2)
    await env["connect"](producer)
    await tc.sync()
    results = await asyncio.gather(*(producer.query(Ask(i), timeout=5) for i in range(7)))
    assert results == list(range(7))
    assert peak == 2
    assert started == list(range(7))  # the waiting ones in arrival order
    assert tc.queries.running == 0 and tc.queries.waiting == 0


async def test_a_burst_of_events_travels_in_batch_frames_in_order(env: dict[str, Any]) -> None:
    producer, consumer = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)
    seen: list[int] = []
    consumer.subscribe("Happened", lambda e: seen.append(e.n))
    tc = await env["connect"](consumer)
    tp = await env["connect"](producer)
    await tc.sync()
    before = tc.client.stats["in_msgs"]
    for i in range(1000):  # one loop iteration: batches of at most 256 events
        await producer.publish(Happened(i, note="x" * 50))
    await tp.flush()
    await eventually(lambda: len(seen) == 1000)
    assert seen == list(range(1000))
    assert tc.client.stats["in_msgs"] - before == 4
    received = {"transport": "nats", "direction": "received", "pattern": "publish"}
    assert env["metrics"].get_sample_value("commbus_wire_messages_total", received) == 1000
    # events published right before close() still go out
    for i in range(1000, 1010):
        await producer.publish(Happened(i))
    await tp.close()
    await eventually(lambda: seen[-1] == 1009)
    assert seen == list(range(1010))


async def test_batching_can_be_turned_off(env: dict[str, Any]) -> None:
    producer, consumer = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)
    seen: list[int] = []
    consumer.subscribe("Happened", lambda e: seen.append(e.n))
    tc = await env["connect"](consumer)
    tp = await env["connect"](producer, batch_events=False)
    await tc.sync()
    before = tc.client.stats["in_msgs"]
    for i in range(50):
        await producer.publish(Happened(i))
    await tp.flush()
    await eventually(lambda: len(seen) == 50)
    assert seen == list(range(50))
    assert tc.client.stats["in_msgs"] - before == 50  # one NATS message per event
