"""What a hostile client cannot do to the hub: oversized or malformed messages, no token,
a stream it never reads, names another process holds, unsigned frames when frames are
signed. TLS: tests/security/test_grpc_tls.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import DynamicEvent, DynamicQuery, TransportError
from jeeves_control_tower.ipc.adapters.grpc import GrpcTransport
from jeeves_control_tower.ipc.adapters.grpc import commbus_pb2 as pb
from jeeves_control_tower.testing import eventually
from jeeves_control_tower.types import Envelope, RequestContext, ServiceDescriptor

from .hubs import hub_and_clients, new_bus

SERVICE = "/jeeves.commbus.v1.CommBus/"


def unary(channel: grpc.aio.Channel, method: str, response: Any) -> Any:
    return channel.unary_unary(
        SERVICE + method,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response.FromString,
    )


def stream(channel: grpc.aio.Channel, metadata: Any = ()) -> Any:
    return channel.stream_stream(
        SERVICE + "Connect",
        request_serializer=pb.ClientMessage.SerializeToString,
        response_deserializer=pb.HubMessage.FromString,
    )(metadata=metadata)


def event_frame(message_type: str, payload: dict[str, Any]) -> bytes:
    return json.dumps(
        {"v": 1, "id": "e1", "type": message_type, "pattern": "publish",
         "class": "DynamicEvent", "payload": {"message_type": message_type, "payload": payload}}
    ).encode()  # fmt: skip


@pytest.fixture
async def channel_to() -> AsyncIterator[Any]:
    channels: list[grpc.aio.Channel] = []

    def make(address: str) -> grpc.aio.Channel:
        channels.append(grpc.aio.insecure_channel(address))
        return channels[-1]

    yield make
    for channel in channels:
        await channel.close()


def rejected(registry: CollectorRegistry, reason: str) -> float:
    value = registry.get_sample_value(
        "commbus_wire_rejected_total", {"transport": "grpc", "reason": reason}
    )
    return value or 0.0


async def test_oversized_messages_are_refused_before_they_are_read(channel_to: Any) -> None:
    async with hub_and_clients(0, {"max_frame_bytes": 64 << 10}) as (hub, _):
        publish = unary(channel_to(hub.address), "Publish", pb.Accepted)
        frame = pb.Frame(type="big", pattern="publish", data=b"x" * (256 << 10))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await publish(frame)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_malformed_frames_are_refused_counted_and_never_delivered(channel_to: Any) -> None:
    registry = CollectorRegistry()
    options = {"metrics": True, "metrics_registry": registry}
    async with hub_and_clients(1, options) as (hub, [(bus, transport)]):
        seen: list[Any] = []
        bus.subscribe("evt", seen.append)
        await transport.sync()
        publish = unary(channel_to(hub.address), "Publish", pb.Accepted)
        bad = [
            (b"not json", "malformed"),
            (b'{"v": 2, "type": "evt", "pattern": "publish"}', "malformed"),
            (event_frame("other", {}), "wrong_destination"),
            (b"[" * 10_000, "too_deep"),
        ]
        for data, reason in bad:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await publish(pb.Frame(type="evt", pattern="publish", data=data))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert reason in (info.value.details() or "")
        assert rejected(registry, "malformed") == 2
        assert rejected(registry, "wrong_destination") == 1
        assert rejected(registry, "too_deep") == 1

        # the same over a stream: a notice back, nothing routed, the good frame goes through
        call = stream(channel_to(hub.address))
        await call.write(pb.ClientMessage(hello=pb.Hello(process_id="hostile-1")))
        assert (await call.read()).WhichOneof("kind") == "welcome"
        await call.write(
            pb.ClientMessage(publish=pb.Frame(type="evt", pattern="publish", data=b"{"))
        )
        notice = await call.read()
        assert notice.notice.status == pb.REFUSED and "malformed" in notice.notice.message
        good = pb.Frame(type="evt", pattern="publish", data=event_frame("evt", {"ok": 1}))
        await call.write(pb.ClientMessage(publish=good))
        await eventually(lambda: len(seen) == 1)
        assert seen[0].payload == {"ok": 1}
        assert rejected(registry, "malformed") == 3
        call.cancel()


async def test_without_the_token_nothing_is_accepted(channel_to: Any) -> None:
    registry = CollectorRegistry()
    options = {"token": "s3cret-token", "metrics": True, "metrics_registry": registry}
    async with hub_and_clients(0, options) as (hub, _):
        publish = unary(channel_to(hub.address), "Publish", pb.Accepted)
        frame = pb.Frame(type="evt", pattern="publish", data=event_frame("evt", {}))
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await publish(frame, metadata=metadata)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(TransportError, match="UNAUTHENTICATED"):
            await GrpcTransport.connect(new_bus(), hub.address, token="wrong", metrics=False)
        assert hub.sessions == {}
        assert (
            registry.get_sample_value("commbus_grpc_refused_total", {"reason": "unauthenticated"})
            == 3
        )

        bus = new_bus()
        transport = await GrpcTransport.connect(
            bus, hub.address, token="s3cret-token", metrics=False
        )
        try:
            await bus.publish(DynamicEvent("evt", {}))
            assert list(hub.sessions) == [transport.process_id]
        finally:
            await transport.close()
        await publish(frame, metadata=(("authorization", "Bearer s3cret-token"),))


@pytest.mark.parametrize(
    "limit", [{"max_queue": 20}, {"max_queue_bytes": 1 << 20}], ids=["messages", "bytes"]
)
async def test_a_client_that_never_reads_is_disconnected(
    channel_to: Any, limit: dict[str, int]
) -> None:
    registry = CollectorRegistry()
    options = {**limit, "metrics": True, "metrics_registry": registry}
    async with hub_and_clients(0, options) as (hub, _):
        call = stream(channel_to(hub.address))
        await call.write(pb.ClientMessage(hello=pb.Hello(process_id="never-reads")))
        await call.write(pb.ClientMessage(subscribe=pb.Interest(pattern="publish", type="flood")))
        await eventually(lambda: hub.router.consumers("publish", "flood") == 1)
        data = event_frame("flood", {"pad": "x" * 60_000})
        for _ in range(2000):  # ~120 MB offered; the hub holds 20 messages or 1 MiB for it
            hub.router.publish("flood", data)
            if "never-reads" not in hub.sessions:
                break
            await asyncio.sleep(0)
        assert "never-reads" not in hub.sessions
        assert hub.router.consumers("publish", "flood") == 0
        value = registry.get_sample_value(
            "commbus_grpc_disconnects_total", {"reason": "slow_consumer"}
        )
        assert value == 1
        call.cancel()


async def test_a_name_another_process_holds_cannot_be_taken(channel_to: Any) -> None:
    async with hub_and_clients(0) as (hub, _):
        first, second = stream(channel_to(hub.address)), stream(channel_to(hub.address))
        for call, name in ((first, "p1"), (second, "p2")):
            await call.write(pb.ClientMessage(hello=pb.Hello(process_id=name)))
            assert (await call.read()).WhichOneof("kind") == "welcome"
        await first.write(pb.ClientMessage(register_service=pb.Service(name="billing")))
        await eventually(lambda: hub.coordinator.get_service("billing") is not None)
        await second.write(pb.ClientMessage(register_service=pb.Service(name="billing")))
        notice = await second.read()
        assert (
            notice.notice.status == pb.REFUSED
            and "held by another process" in notice.notice.message
        )
        service = hub.coordinator.get_service("billing")
        assert service is not None and service.metadata["grpc_process"] == "p1"
        # nor one of the hub's own services
        hub.coordinator.register_service(ServiceDescriptor(name="hub.own", service_type="t"))
        await second.write(pb.ClientMessage(register_service=pb.Service(name="hub.own")))
        notice = await second.read()
        assert notice.notice.status == pb.REFUSED and notice.notice.type == "hub.own"
        own = hub.coordinator.get_service("hub.own")
        assert own is not None and "grpc_process" not in own.metadata
        # nor by claiming the holder's process id: that stream is refused
        thief = stream(channel_to(hub.address))
        await thief.write(pb.ClientMessage(hello=pb.Hello(process_id="p1")))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await thief.read()
        assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert hub.sessions["p1"] is not None
        first.cancel()
        await eventually(lambda: "p1" not in hub.sessions)
        second.cancel()


async def test_bad_dispatch_requests_each_get_one_refusal(channel_to: Any) -> None:
    # An envelope nested past what the JSON parser takes, and a second dispatch under an id
    # that is running: each is refused with its one Result (the unary call: an error), and
    # the running dispatch, once cancelled, sends none.
    async with hub_and_clients(0) as (hub, _):
        hub.coordinator.register_service(ServiceDescriptor(name="slow", service_type="w"))
        started = asyncio.Event()

        async def slow(envelope: Envelope) -> Envelope:
            started.set()
            await asyncio.sleep(60)
            return envelope

        hub.coordinator.register_handler("slow", slow)
        hub.coordinator.register_service(ServiceDescriptor(name="echo", service_type="w"))
        hub.coordinator.register_handler("echo", _echo)
        envelope = json.dumps(
            Envelope(RequestContext(request_id="r", capability="c")).to_dict()
        ).encode()
        deep = b"[" * 100_000 + b"]" * 100_000
        call = stream(channel_to(hub.address))
        await call.write(pb.ClientMessage(hello=pb.Hello(process_id="p1")))
        assert (await call.read()).WhichOneof("kind") == "welcome"

        def dispatch(rid: int, service: str, data: bytes) -> pb.ClientMessage:
            request = pb.DispatchRequest(service=service, envelope=data)
            return pb.ClientMessage(dispatch=pb.Request(id=rid, dispatch=request))

        await call.write(dispatch(1, "echo", deep))
        result = (await asyncio.wait_for(call.read(), 5)).result
        assert (result.id, result.status) == (1, pb.REFUSED) and "too deep" in result.message
        await call.write(dispatch(7, "slow", envelope))
        await asyncio.wait_for(started.wait(), 5)
        await call.write(dispatch(7, "echo", envelope))
        result = (await asyncio.wait_for(call.read(), 5)).result
        assert (result.id, result.status) == (7, pb.REFUSED) and "runs" in result.message
        await call.write(pb.ClientMessage(cancel=pb.Cancel(id=7)))
        await call.write(dispatch(8, "echo", envelope))
        result = (await asyncio.wait_for(call.read(), 5)).result
        assert (result.id, result.status) == (8, pb.OK)  # nothing for 7 came first
        call.cancel()
        unary_call = unary(channel_to(hub.address), "Dispatch", pb.DispatchReply)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await unary_call(pb.DispatchRequest(service="echo", envelope=deep), timeout=5)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "too deep" in (refused.value.details() or "")


async def test_a_dispatch_the_hub_fails_on_still_gets_its_result(channel_to: Any) -> None:
    async with hub_and_clients(0) as (hub, _):

        async def broken(request: pb.DispatchRequest) -> Any:
            raise RuntimeError("a bug in the hub")

        hub.services.dispatch = broken  # type: ignore[method-assign]
        call = stream(channel_to(hub.address))
        await call.write(pb.ClientMessage(hello=pb.Hello(process_id="p1")))
        assert (await call.read()).WhichOneof("kind") == "welcome"
        request = pb.Request(id=3, dispatch=pb.DispatchRequest(service="any"))
        await call.write(pb.ClientMessage(dispatch=request))
        result = (await asyncio.wait_for(call.read(), 5)).result
        assert (result.id, result.status) == (3, pb.UNAVAILABLE)
        assert "RuntimeError" in result.message
        call.cancel()


async def _echo(envelope: Envelope) -> Envelope:
    return envelope


async def test_with_a_signing_key_unsigned_frames_never_pass_the_hub() -> None:
    registry = CollectorRegistry()
    key = "k" * 32
    hub_options = {"signing_key": key, "metrics": True, "metrics_registry": registry}
    async with hub_and_clients(2, hub_options, signing_key=key) as (hub, clients):
        (a, _), (b, tb) = clients
        seen: list[Any] = []
        b.subscribe("signed.evt", seen.append)
        b.register_handler("signed.q", lambda q: "signed")
        await tb.sync()
        await a.publish(DynamicEvent("signed.evt", {"n": 1}))
        assert await a.query(DynamicQuery("signed.q", {})) == "signed"
        await eventually(lambda: len(seen) == 1)

        unsigned = new_bus()
        transport = await GrpcTransport.connect(unsigned, hub.address, metrics=False)
        try:
            await unsigned.publish(DynamicEvent("signed.evt", {"n": 2}))
            await eventually(lambda: rejected(registry, "bad_signature") >= 1)
            await asyncio.sleep(0.1)
            assert len(seen) == 1
        finally:
            await transport.close()
