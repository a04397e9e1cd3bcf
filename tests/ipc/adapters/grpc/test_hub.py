"""The hub's own coordinator: instrumented as the bus it serves is; what a Dispatch may ask."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.ipc.adapters.grpc import commbus_pb2 as pb
from jeeves_control_tower.ipc.adapters.grpc import serve_grpc
from jeeves_control_tower.ipc.adapters.grpc.hubservices import MAX_RETRIES
from jeeves_control_tower.types import Envelope, RequestContext, ServiceDescriptor


async def _dispatch_three(bus: InMemoryCommBus) -> object:
    hub = await serve_grpc(bus, port=0, metrics=False)
    try:
        hub.coordinator.register_service(ServiceDescriptor(name="svc", service_type="w"))

        async def echo(envelope: Envelope) -> Envelope:
            return envelope

        hub.coordinator.register_handler("svc", echo)
        envelope = Envelope(request_context=RequestContext(request_id="r", capability="c"))
        request = pb.DispatchRequest(
            service="svc", method="m", envelope=json.dumps(envelope.to_dict()).encode()
        )
        async with grpc.aio.insecure_channel(hub.address) as channel:
            call = channel.unary_unary(
                "/jeeves.commbus.v1.CommBus/Dispatch",
                request_serializer=pb.DispatchRequest.SerializeToString,
                response_deserializer=pb.DispatchReply.FromString,
            )
            for _ in range(3):
                await call(request, timeout=5)
        return hub.coordinator.telemetry
    finally:
        await hub.close(grace=0)


async def test_dispatches_through_an_instrumented_bus_hub_are_counted() -> None:
    registry = CollectorRegistry()
    telemetry = await _dispatch_three(InMemoryCommBus(registry=registry))
    assert telemetry is not None
    counted = sum(
        sample.value
        for metric in registry.collect()
        if metric.name == "commbus_dispatch"
        for sample in metric.samples
        if sample.name == "commbus_dispatch_total"
    )
    assert counted == 3


async def test_an_uninstrumented_bus_gets_an_uninstrumented_coordinator() -> None:
    assert await _dispatch_three(InMemoryCommBus(instrument=False)) is None


def _dispatch_call(channel: grpc.aio.Channel) -> Any:
    return channel.unary_unary(
        "/jeeves.commbus.v1.CommBus/Dispatch",
        request_serializer=pb.DispatchRequest.SerializeToString,
        response_deserializer=pb.DispatchReply.FromString,
    )


async def test_a_dispatch_runs_max_timeout_at_most_and_retries_are_bounded() -> None:
    hub = await serve_grpc(InMemoryCommBus(instrument=False), port=0, metrics=False,
                           max_timeout=0.5)  # fmt: skip
    try:
        hub.coordinator.register_service(ServiceDescriptor(name="slow", service_type="w"))

        async def slow(envelope: Envelope) -> Envelope:
            await asyncio.sleep(60)
            return envelope

        hub.coordinator.register_handler("slow", slow)
        envelope = Envelope(request_context=RequestContext(request_id="r", capability="c"))
        data = json.dumps(envelope.to_dict()).encode()
        async with grpc.aio.insecure_channel(hub.address) as channel:
            call = _dispatch_call(channel)
            # Asked for an hour: ends at the hub's max_timeout, long before the call's 20 s.
            request = pb.DispatchRequest(service="slow", timeout_seconds=3600, envelope=data)
            reply = await call(request, timeout=20)
            assert Envelope.from_dict(json.loads(reply.envelope)).terminated
            for retries in (MAX_RETRIES + 1, 2**31 - 1, -1):
                request = pb.DispatchRequest(service="slow", max_retries=retries, envelope=data)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call(request, timeout=20)
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await hub.close(grace=0)
