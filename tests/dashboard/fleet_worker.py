"""One process of a fleet, for the fleet tests: ``python -m tests.dashboard.fleet_worker``.

Arguments: ``TRANSPORT BROKER_URL PREFIX OPTIONS_JSON``. The process runs what a user's
process runs: a bus, a coordinator with the services of option ``services`` (each with a
handler), a broker transport, :class:`RemoteServices` (option ``interval``, default 0.2 s)
and the observability endpoint (option ``token``), advertised with
``advertise_endpoint`` (option ``advertise``: the URL to advertise instead of its own).
It prints ``{"ready": pid, "url": ..., "process": ...}`` once its first heartbeat carrying
the URL went out, and shuts down when its stdin closes (or is killed by the test).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.ipc.adapters.services import RemoteServices
from jeeves_control_tower.logging import NullLogger
from jeeves_control_tower.observability import serve
from jeeves_control_tower.observability.fleet import advertise_endpoint
from jeeves_control_tower.types import Envelope, ServiceDescriptor
from tests.ipc.adapters.mp_worker import connect, emit


async def handle(envelope: Envelope) -> Envelope:
    return envelope


async def main(kind: str, url: str, prefix: str, opts: dict[str, Any]) -> None:
    bus = InMemoryCommBus()
    coordinator = CommBusCoordinator(NullLogger(), bus)
    for name in opts.get("services", []):
        coordinator.register_service(ServiceDescriptor(name, "worker"))
        coordinator.register_handler(name, handle)
    transport = await connect(kind, bus, url, prefix, {})
    remote = await RemoteServices(
        coordinator, transport, interval=opts.get("interval", 0.2)
    ).start()
    server = serve(coordinator, token=opts.get("token"))
    advertise_endpoint(server, remote, opts.get("advertise"))
    await remote.announce()
    emit(ready=os.getpid(), url=server.url, process=transport.process_id)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the test closes our stdin
    await remote.close()
    server.close()
    await transport.close()


if __name__ == "__main__":
    _, kind, url, prefix, options = sys.argv
    asyncio.run(main(kind, url, prefix, json.loads(options)))
