"""The gRPC hub killed mid-stream: a hub process (``jeeves-ipc hub``) is SIGKILLed while
one process streams commands and events to another through it, and restarted on the same
port. No ``send`` raises (each waits for the hub to come back), both processes reconnect
by themselves and register again, and everything sent after the restart is handled; what
the dead hub held is lost (the hub keeps commands in memory: docs/adapters.md). A query in
flight when the hub dies fails with :class:`TransportError`, not a hang.

The killed-client fault (its command redelivered, its services marked down) is in
``tests/ipc/adapters/grpc/test_services.py``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from jeeves_control_tower.ipc import InMemoryCommBus, TransportError
from jeeves_control_tower.ipc.adapters.grpc import GrpcTransport
from jeeves_control_tower.testing import eventually
from jeeves_control_tower.testing.messages import REGISTRY, Ask, DoWork, Happened
from tests.brokers import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


async def start_hub(port: int) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jeeves_control_tower.cli", "hub", "--port", str(port),
        env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert b"listening" in line, line
    return proc


async def test_the_hub_killed_mid_stream_and_restarted() -> None:
    port = free_port()
    hub = await start_hub(port)
    a, b = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)
    options = {"registry": REGISTRY, "metrics": False, "send_timeout": 30.0}
    ta = await GrpcTransport.connect(a, f"127.0.0.1:{port}", **options)
    tb = await GrpcTransport.connect(b, f"127.0.0.1:{port}", **options)
    handled: set[int] = set()
    events: list[int] = []
    b.register_handler("DoWork", lambda c: handled.add(c.n))
    b.subscribe("Happened", lambda e: events.append(e.n))

    release = asyncio.Event()

    async def slow(q: Ask) -> int:
        await release.wait()
        return q.n

    b.register_handler("Ask", slow)
    await tb.sync()
    errors: list[BaseException] = []
    phase = {"restarted": False}
    after: list[int] = []

    async def stream() -> None:
        for n in range(400):
            restarted = phase["restarted"]
            try:
                await a.send(DoWork(n))
                await a.publish(Happened(n))
            except Exception as exc:
                errors.append(exc)
            if restarted:
                after.append(n)
            await asyncio.sleep(0.005)

    try:
        sender = asyncio.get_running_loop().create_task(stream())
        await eventually(lambda: len(handled) >= 50, 20.0)
        query = asyncio.get_running_loop().create_task(a.query(Ask(1), timeout=20.0))
        await asyncio.sleep(0.1)
        hub.send_signal(signal.SIGKILL)
        await hub.wait()
        with pytest.raises(TransportError):
            await asyncio.wait_for(query, 10.0)
        await asyncio.sleep(0.3)  # the stream keeps sending into the outage
        hub = await start_hub(port)
        await eventually(lambda: ta.link.connected and tb.link.connected, 20.0)
        phase["restarted"] = True
        await asyncio.wait_for(sender, 60.0)
        assert errors == []
        assert after, "nothing was sent after the restart"
        await eventually(lambda: set(after) <= handled, 20.0)
        await eventually(lambda: set(after) <= set(events), 20.0)
    finally:
        release.set()
        await ta.close()
        await tb.close()
        if hub.returncode is None:
            hub.send_signal(signal.SIGTERM)
            await asyncio.wait_for(hub.wait(), 15)
