"""What one client may hold in the hub: pending queries by count and bytes, entries freed
when the caller gives up (its stream or its unary call ends, or it cancels), the responder
told to stop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from jeeves_control_tower.ipc import DynamicQuery
from jeeves_control_tower.ipc.adapters.grpc import commbus_pb2 as pb
from jeeves_control_tower.testing import eventually

from .hubs import hub_and_clients

SERVICE = "/jeeves.commbus.v1.CommBus/"


def query_frame(message_type: str, pad: str = "") -> bytes:
    return json.dumps(
        {"v": 1, "id": "q", "type": message_type, "pattern": "query", "payload": {"pad": pad}}
    ).encode()


def query(rid: int, message_type: str, pad: str = "") -> pb.ClientMessage:
    frame = pb.Frame(type=message_type, pattern="query", data=query_frame(message_type, pad))
    return pb.ClientMessage(query=pb.Request(id=rid, frame=frame, timeout=300))


@pytest.fixture
async def channel() -> AsyncIterator[Any]:
    opened: list[grpc.aio.Channel] = []

    def make(address: str) -> grpc.aio.Channel:
        opened.append(grpc.aio.insecure_channel(address))
        return opened[-1]

    yield make
    for each in opened:
        await each.close()


async def sink(channel: grpc.aio.Channel, process_id: str) -> Any:
    """A stream that consumes ("query", "Sink"), reads what it is sent, answers nothing."""
    call = channel.stream_stream(
        SERVICE + "Connect",
        request_serializer=pb.ClientMessage.SerializeToString,
        response_deserializer=pb.HubMessage.FromString,
    )()
    await call.write(pb.ClientMessage(hello=pb.Hello(process_id=process_id)))
    await call.write(pb.ClientMessage(subscribe=pb.Interest(pattern="query", type="Sink", id=1)))
    return call


async def results(call: Any, count: int) -> dict[int, pb.Result]:
    got: dict[int, pb.Result] = {}
    while len(got) < count:
        message = await asyncio.wait_for(call.read(), 10)
        if message.WhichOneof("kind") == "result":
            got[message.result.id] = message.result
    return got


async def test_one_client_cannot_take_every_slot_and_its_stream_end_frees_them(
    channel: Any,
) -> None:
    options = {"max_in_flight": 30, "max_pending": 10, "max_pending_bytes": 1 << 20}
    async with hub_and_clients(0, options) as (hub, _):
        hub.bus.register_handler("Ok", lambda q: {"ok": True})
        flood = await sink(channel(hub.address), "flood")
        for rid in range(2, 42):
            await flood.write(query(rid, "Sink"))
        got = await results(flood, 31)  # the subscription's and 30 refusals
        refused = [r for r in got.values() if r.status == pb.REFUSED]
        assert len(refused) == 30 and "more than 10 queries" in refused[0].message
        assert hub.router.in_flight == 10
        # Another client's query still runs.
        ask = channel(hub.address).unary_unary(
            SERVICE + "Query",
            request_serializer=pb.Frame.SerializeToString,
            response_deserializer=pb.ReplyFrame.FromString,
        )
        reply = await ask(pb.Frame(type="Ok", pattern="query", data=query_frame("Ok")), timeout=10)
        assert json.loads(reply.data)["v"] == 1
        flood.cancel()  # the caller went away: nobody waits for its answers
        await eventually(lambda: hub.router.in_flight == 0)


async def test_pending_bytes_are_bounded_per_client(channel: Any) -> None:
    async with hub_and_clients(0, {"max_pending_bytes": 350_000}) as (hub, _):
        flood = await sink(channel(hub.address), "big")
        for rid in range(2, 6):
            await flood.write(query(rid, "Sink", "x" * 100_000))
        got = await results(flood, 2)  # the subscription's and the fourth query's
        assert got[5].status == pb.REFUSED and "pending bytes" in got[5].message
        assert hub.router.in_flight == 3
        flood.cancel()


async def test_a_unary_query_given_up_frees_its_entry(channel: Any) -> None:
    async with hub_and_clients(0) as (hub, _):
        responder = await sink(channel(hub.address), "responder")
        await eventually(lambda: hub.router.consumers("query", "Sink") == 1)
        ask = channel(hub.address).unary_unary(
            SERVICE + "Query",
            request_serializer=pb.Frame.SerializeToString,
            response_deserializer=pb.ReplyFrame.FromString,
        )
        frame = pb.Frame(type="Sink", pattern="query", data=query_frame("Sink"))
        call = ask(frame, timeout=60)  # the hub would wait 60 s for the answer
        await eventually(lambda: hub.router.in_flight == 1)
        call.cancel()
        await eventually(lambda: hub.router.in_flight == 0)
        told = await asyncio.wait_for(responder.read(), 5)
        while told.WhichOneof("kind") != "cancel":
            told = await asyncio.wait_for(responder.read(), 5)
        responder.cancel()


async def test_a_query_its_caller_gives_up_is_cancelled_in_the_hub_and_the_responder() -> None:
    async with hub_and_clients(2) as (hub, [(responder, _), (caller, _)]):
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def slow(query: DynamicQuery) -> int:
            started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return 1

        responder.register_handler("slow.q", slow)
        await eventually(lambda: hub.router.consumers("query", "slow.q") == 1)
        asking = asyncio.ensure_future(caller.query(DynamicQuery("slow.q", {}), timeout=60))
        await asyncio.wait_for(started.wait(), 10)
        assert hub.router.in_flight == 1
        asking.cancel()  # the caller gives up long before the query's 60 s
        # Well before the responder bus's own query_timeout (5 s) would cancel it.
        await asyncio.wait_for(cancelled.wait(), 3)
        await eventually(lambda: hub.router.in_flight == 0, timeout=3)


async def test_a_query_from_the_hub_bus_given_up_is_cancelled_too() -> None:
    async with hub_and_clients(1) as (hub, [(responder, _)]):
        cancelled = asyncio.Event()

        async def slow(query: DynamicQuery) -> int:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return 1

        responder.register_handler("slow.q", slow)
        await eventually(lambda: hub.router.consumers("query", "slow.q") == 1)
        asking = asyncio.ensure_future(hub.bus.query(DynamicQuery("slow.q", {}), timeout=60))
        await eventually(lambda: hub.router.in_flight == 1)
        asking.cancel()
        await asyncio.wait_for(cancelled.wait(), 3)  # before the responder's own 5 s
        assert hub.router.in_flight == 0
