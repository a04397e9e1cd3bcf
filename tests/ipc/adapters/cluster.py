"""Worker processes on a real broker, for the multi-process and broker-fault tests.

A :class:`Cluster` starts worker processes (``python -m tests.ipc.adapters.mp_worker``, see
that module for the roles) on one broker and connects buses of the test's own process
to the same broker; :class:`Worker` collects what a worker process prints. Used by
``tests/ipc/adapters/test_multiprocess.py`` (shared brokers) and
``tests/reliability/test_broker_faults.py`` (private brokers it kills and restarts).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.logging import NullLogger
from jeeves_control_tower.testing.messages import REGISTRY
from tests import brokers
from tests.conformance.conftest import nats_cleanup, rabbitmq_cleanup

ROOT = Path(__file__).resolve().parents[3]

#: ``pytest.mark.parametrize`` values for a test that runs on each broker, with its marker.
KINDS = [
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("nats", marks=pytest.mark.nats),
]
#: ... and RabbitMQ too (the tests that run on it so far).
ALL_KINDS = [*KINDS, pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)]

#: The shared broker's URL of each kind.
URLS = {"redis": brokers.REDIS_URL, "nats": brokers.NATS_URL, "rabbitmq": brokers.RABBITMQ_URL}


class Worker:
    """One worker process; ``lines`` collects what it printed (one JSON object a line)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self.ready = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = json.loads(raw)
            self.lines.append(line)
            if "ready" in line:
                self.ready.set()

    async def wait_ready(self, timeout: float) -> None:
        """Until the worker printed ``ready``; fails at once if it exited before."""
        async with asyncio.timeout(timeout):
            while not self.ready.is_set():
                if self._reader.done():  # its stdout closed: the process is gone
                    code = await self.proc.wait()
                    raise RuntimeError(f"worker exited with {code} before it was ready")
                await asyncio.sleep(0.02)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def values(self, key: str) -> list[Any]:
        return [line[key] for line in self.lines if key in line]

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc.returncode is None and self.proc.stdin is not None:
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.kill()
                await self.proc.wait()
        await asyncio.gather(self._reader, return_exceptions=True)


class Cluster:
    """Worker processes and local buses on one broker (``kind`` is redis or nats)."""

    def __init__(self, kind: str, url: str, prefix: str | None = None) -> None:
        self.kind, self.url = kind, url
        self.prefix = prefix if prefix is not None else new_prefix(kind)
        self.workers: list[Worker] = []
        self.transports: list[Any] = []

    async def spawn(self, role: str, **opts: Any) -> Worker:
        """Start a worker (``role``: a comma-separated list of roles) and wait until its
        registrations are in effect on the broker."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.ipc.adapters.mp_worker",
            role, self.kind, self.url, self.prefix, json.dumps(opts),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"},
        )  # fmt: skip
        worker = Worker(proc)
        self.workers.append(worker)
        await worker.wait_ready(timeout=60)
        return worker

    async def bus(self, **telemetry: Any) -> InMemoryCommBus:
        """A bus of this process attached to the broker (``bus.transport``)."""
        bus = InMemoryCommBus(**(telemetry or {"instrument": False}))
        opts: dict[str, Any] = {"prefix": self.prefix, "registry": REGISTRY, "metrics": False}
        opts["logger"] = NullLogger()
        if self.kind == "redis":
            from jeeves_control_tower.ipc.adapters.redis import RedisTransport

            self.transports.append(await RedisTransport.connect(bus, self.url, **opts))
        elif self.kind == "rabbitmq":
            from jeeves_control_tower.ipc.adapters.rabbitmq import RabbitMQTransport

            self.transports.append(
                await RabbitMQTransport.connect(bus, self.url, send_timeout=30, **opts)
            )
        else:
            from jeeves_control_tower.ipc.adapters.nats import NatsTransport

            self.transports.append(
                await NatsTransport.connect(bus, self.url, send_timeout=30, **opts)
            )
        return bus

    async def close(self) -> None:
        for worker in self.workers:
            await worker.stop()
        for transport in self.transports:
            await transport.close()

    async def cleanup(self) -> None:
        """Delete what the cluster left on a shared broker (streams, keys)."""
        if self.kind == "nats":
            await nats_cleanup(self.url, self.prefix)
            return
        if self.kind == "rabbitmq":
            await rabbitmq_cleanup(self.url, rabbitmq_durables(self.prefix))
            return
        import redis.asyncio as aioredis

        client = aioredis.from_url(self.url)
        keys = [k async for k in client.scan_iter(match=f"{self.prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def new_prefix(kind: str) -> str:
    """A namespace of its own for one test's keys, streams and subjects."""
    return brokers.unique("jt:mp:") + ":" if kind == "redis" else brokers.unique("jtmp")


def rabbitmq_durables(prefix: str) -> set[tuple[str, str]]:
    """What the worker roles leave on RabbitMQ under ``prefix``."""
    return {
        ("exchange", f"{prefix}.events"),
        ("exchange", f"{prefix}.dead"),
        ("queue", f"{prefix}.dead"),
        ("queue", f"{prefix}.cmd.DoWork"),
    }
