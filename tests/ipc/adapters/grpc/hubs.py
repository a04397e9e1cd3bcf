"""Helpers of the gRPC tests: a private hub per test, and buses joined to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.ipc.adapters.grpc import GrpcHub, GrpcTransport, serve_grpc


def new_bus() -> InMemoryCommBus:
    return InMemoryCommBus(query_timeout=5.0, instrument=False)


@asynccontextmanager
async def hub_and_clients(
    clients: int, hub_options: dict[str, Any] | None = None, **client_options: Any
) -> AsyncIterator[tuple[GrpcHub, list[tuple[InMemoryCommBus, GrpcTransport]]]]:
    """A hub on a free loopback port and ``clients`` buses joined to it (closed after)."""
    hub = await serve_grpc(new_bus(), port=0, **{"metrics": False, **(hub_options or {})})
    joined: list[tuple[InMemoryCommBus, GrpcTransport]] = []
    try:
        for _ in range(clients):
            bus = new_bus()
            options = {"metrics": False, **client_options}
            joined.append((bus, await GrpcTransport.connect(bus, hub.address, **options)))
        yield hub, joined
    finally:
        for _, transport in joined:
            await transport.close()
        await hub.close(grace=0)
