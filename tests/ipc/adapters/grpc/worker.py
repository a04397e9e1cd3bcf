"""A process joined to a hub, for the fault tests: ``python -m tests.ipc.adapters.grpc.worker
HOST:PORT``. It handles ``DoWork`` commands and serves the ``stuck`` service, both of which
never finish, and prints one JSON line per event (``ready``, ``command``, ``dispatch``) so
the test knows when to kill it."""

from __future__ import annotations

import asyncio
import json
import sys

from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.ipc.adapters.grpc import GrpcServices, GrpcTransport
from jeeves_control_tower.testing.messages import REGISTRY, DoWork
from jeeves_control_tower.types import Envelope, ServiceDescriptor


def say(what: str, **fields: object) -> None:
    print(json.dumps({"event": what, **fields}), flush=True)


async def main(address: str) -> None:
    bus = InMemoryCommBus(instrument=False)
    transport = await GrpcTransport.connect(bus, address, registry=REGISTRY, metrics=False)
    services = await GrpcServices(transport).start()

    async def command(cmd: DoWork) -> None:
        say("command", n=cmd.n)
        await asyncio.Event().wait()

    async def stuck(envelope: Envelope) -> Envelope:
        say("dispatch", envelope_id=envelope.envelope_id)
        await asyncio.Event().wait()
        return envelope

    bus.register_handler("DoWork", command)
    services.register(ServiceDescriptor(name="stuck", service_type="test"), stuck)
    await transport.sync()
    say("ready", process=transport.process_id)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
