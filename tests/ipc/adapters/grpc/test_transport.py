"""GrpcTransport through a hub: routing, fail-fast connect, reconnection with a bounded buffer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from jeeves_control_tower.ipc import DynamicEvent, DynamicQuery, NoHandlerError, TransportError
from jeeves_control_tower.ipc.adapters.grpc import GrpcTransport, serve_grpc
from jeeves_control_tower.testing import eventually
from jeeves_control_tower.testing.messages import REGISTRY, Ask, DoWork, Happened
from tests.brokers import free_port

from .hubs import hub_and_clients, new_bus


async def test_first_connect_fails_fast_when_no_hub_listens() -> None:
    started = time.monotonic()
    with pytest.raises(TransportError, match="did not answer"):
        await GrpcTransport.connect(new_bus(), f"127.0.0.1:{free_port()}", connect_timeout=0.5)
    assert time.monotonic() - started < 3.0


async def test_publish_reaches_every_process_and_the_hub() -> None:
    async with hub_and_clients(3, {"registry": REGISTRY}, registry=REGISTRY) as (hub, clients):
        seen: list[tuple[str, int]] = []
        hub.bus.subscribe("Happened", lambda e: seen.append(("hub", e.n)))
        for i, (bus, _) in enumerate(clients):

            def on_event(e: Happened, name: str = f"c{i}") -> None:
                seen.append((name, e.n))

            bus.subscribe("Happened", on_event)
        for _, transport in clients:
            await transport.sync()
        await hub.local.sync()
        await clients[0][0].publish(Happened(1))
        await hub.bus.publish(Happened(2))
        await eventually(lambda: len(seen) == 8)
        assert sorted(seen) == sorted((w, n) for w in ("hub", "c0", "c1", "c2") for n in (1, 2))


async def test_queries_cross_the_hub_both_ways() -> None:
    async with hub_and_clients(1) as (hub, [(bus, transport)]):
        bus.register_handler("client.double", lambda q: q.payload["n"] * 2)
        hub.bus.register_handler("hub.triple", lambda q: q.payload["n"] * 3)
        await transport.sync()
        await hub.local.sync()
        assert await hub.bus.query(DynamicQuery("client.double", {"n": 21})) == 42
        assert await bus.query(DynamicQuery("hub.triple", {"n": 5})) == 15
        with pytest.raises(NoHandlerError):
            await bus.query(DynamicQuery("nobody", {}), timeout=1.0)


async def test_a_command_waits_in_the_hub_for_its_handler() -> None:
    async with hub_and_clients(2, registry=REGISTRY) as (hub, [(a, _), (b, tb)]):
        await a.send(DoWork(5))
        assert hub.router.waiting == 1
        handled: list[int] = []
        b.register_handler("DoWork", lambda c: handled.append(c.n))
        await tb.sync()
        await eventually(lambda: handled == [5])
        assert hub.router.waiting == 0


async def test_the_client_reconnects_after_a_hub_restart_and_resubscribes() -> None:
    port = free_port()
    hub = await serve_grpc(new_bus(), port=port, metrics=False, registry=REGISTRY)
    a, b = new_bus(), new_bus()
    ta = await GrpcTransport.connect(a, hub.address, registry=REGISTRY, metrics=False)
    tb = await GrpcTransport.connect(b, hub.address, registry=REGISTRY, metrics=False)
    try:
        seen: list[int] = []
        b.subscribe("Happened", lambda e: seen.append(e.n))
        b.register_handler("Ask", lambda q: q.n + 1)
        await tb.sync()
        await a.publish(Happened(1))
        await eventually(lambda: seen == [1])

        await hub.close(grace=0)
        await eventually(lambda: not ta.link.connected and not tb.link.connected)
        await a.publish(Happened(2))  # held in the bounded reconnect buffer meanwhile
        assert ta.link.buffered == 1
        hub = await serve_grpc(new_bus(), port=port, metrics=False, registry=REGISTRY)
        await eventually(lambda: ta.link.connected and tb.link.connected, timeout=10.0)
        await eventually(lambda: ta.link.buffered == 0)  # written to the new hub
        await tb.sync()  # b's subscription was registered again on its new stream
        await a.publish(Happened(3))
        await eventually(lambda: 3 in seen, timeout=10.0)
        assert await a.query(Ask(41), timeout=5.0) == 42
    finally:
        await ta.close()
        await tb.close()
        await hub.close(grace=0)


async def test_the_reconnect_buffer_is_bounded() -> None:
    port = free_port()
    hub = await serve_grpc(new_bus(), port=port, metrics=False)
    bus = new_bus()
    transport = await GrpcTransport.connect(
        bus, hub.address, metrics=False, buffer_messages=10, batch_events=False
    )
    try:
        await hub.close(grace=0)
        await eventually(lambda: not transport.link.connected)
        for i in range(10):
            await bus.publish(DynamicEvent("x", {"i": i}))
        with pytest.raises(TransportError, match="buffered already"):
            await bus.publish(DynamicEvent("x", {"i": 10}))
        with pytest.raises(TransportError, match="unreachable"):
            await bus.query(DynamicQuery("x.q", {}), timeout=1.0)
    finally:
        await transport.close()


async def test_a_command_in_flight_is_routed_again_when_its_process_goes_away() -> None:
    async with hub_and_clients(3, registry=REGISTRY) as (_, clients):
        (a, _), (b, tb), (c, tc) = clients
        started, release = asyncio.Event(), asyncio.Event()
        handled: list[tuple[str, int]] = []

        async def stuck(cmd: DoWork) -> None:
            started.set()
            await release.wait()

        b.register_handler("DoWork", stuck)
        await tb.sync()
        await a.send(DoWork(9))
        await asyncio.wait_for(started.wait(), 5.0)
        c.register_handler("DoWork", lambda cmd: handled.append(("c", cmd.n)))
        await tc.sync()
        await tb.link.close()  # b's stream ends with the command unanswered
        await eventually(lambda: handled == [("c", 9)])
        release.set()


async def test_metrics_say_transport_grpc() -> None:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    options: dict[str, Any] = {"metrics": True, "metrics_registry": registry}
    async with hub_and_clients(2, registry=REGISTRY, **options) as (_, [(a, _), (b, tb)]):
        b.subscribe("Happened", lambda e: None)
        b.register_handler("Ask", lambda q: q.n)
        await tb.sync()
        await a.publish(Happened(1))
        assert await a.query(Ask(1)) == 1

        def count(direction: str, pattern: str) -> float:
            labels = {"transport": "grpc", "direction": direction, "pattern": pattern}
            return registry.get_sample_value("commbus_wire_messages_total", labels) or 0.0

        await eventually(lambda: count("received", "publish") == 1)
        assert count("sent", "publish") == 1
        assert count("sent", "query") == 1 and count("received", "query") == 1
        assert count("sent", "reply") == 1 and count("received", "reply") == 1


async def test_close_writes_what_was_published_before_it() -> None:
    async with hub_and_clients(1, {"registry": REGISTRY}) as (hub, _):
        seen: list[int] = []
        hub.bus.subscribe("Happened", lambda e: seen.append(e.n))
        await hub.local.sync()
        bus = new_bus()
        transport = await GrpcTransport.connect(bus, hub.address, registry=REGISTRY, metrics=False)
        for i in range(2000):
            await bus.publish(Happened(i))
        await transport.close()
        await eventually(lambda: len(seen) == 2000)
        assert seen == list(range(2000))


async def test_asyncapi_describes_the_hub_and_its_routes() -> None:
    async with hub_and_clients(1) as (hub, [(_, transport)]):
        server = transport.asyncapi_server()
        assert server.protocol == "grpc" and server.host == hub.address
        channel = transport.asyncapi_channel("send", "DoWork")
        assert channel.address == "send:DoWork" and "Exactly one" in channel.description
        assert "jeeves.commbus.v1.CommBus/Connect" in channel.description


async def test_the_hub_address_may_say_grpc_or_grpcs_and_nothing_else() -> None:
    bus = new_bus()
    plain = GrpcTransport(bus, "grpc://hub:50051", metrics=False)
    assert (plain.target, plain.url, plain.asyncapi_server().protocol) == (
        "hub:50051",
        "grpc://hub:50051",
        "grpc",
    )
    secure = GrpcTransport(bus, "grpcs://hub:443", metrics=False)
    assert (secure.target, secure.url, secure.asyncapi_server().protocol) == (
        "hub:443",
        "grpcs://hub:443",
        "grpcs",
    )
    with pytest.raises(ValueError) as info:
        GrpcTransport(bus, "amqp://guest:secret@hub:5672/", metrics=False)
    assert "secret" not in str(info.value) and "HOST:PORT" in str(info.value)
    with pytest.raises(ValueError):
        GrpcTransport(bus, "grpc://", metrics=False)
    for resolved in ("dns:///hub:50051", "unix:///run/hub.sock"):  # gRPC's own: as given
        assert GrpcTransport(bus, resolved, metrics=False).target == resolved
    async with hub_and_clients(0) as (hub, _):
        joined = await GrpcTransport.connect(bus, f"grpc://{hub.address}", metrics=False)
        await joined.close()
    with pytest.raises(TransportError, match="is it up"):
        await GrpcTransport.connect(bus, f"127.0.0.1:{free_port()}", connect_timeout=0.3)
