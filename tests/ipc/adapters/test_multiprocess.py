"""Real OS processes talking through real brokers (see ``mp_worker.py``).

Fan-out across processes, exactly-one handling of 1,000 commands by 3 consumer processes,
a consumer killed mid-command, a broker restarted mid-stream, and one trace across a
cross-process query.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.logging import NullLogger
from tests import brokers
from tests.conformance.conftest import eventually, nats_cleanup
from tests.conformance.messages import REGISTRY, Ask, DoWork, Happened

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[3]


class Worker:
    """One worker process; ``lines`` collects what it printed."""

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
    def __init__(self, kind: str, url: str, prefix: str) -> None:
        self.kind, self.url, self.prefix = kind, url, prefix
        self.workers: list[Worker] = []
        self.transports: list[Any] = []

    async def spawn(self, role: str, **opts: Any) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.ipc.adapters.mp_worker",
            role, self.kind, self.url, self.prefix, json.dumps(opts),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"},
        )  # fmt: skip
        worker = Worker(proc)
        self.workers.append(worker)
        await asyncio.wait_for(worker.ready.wait(), 30)
        return worker

    async def bus(self, **telemetry: Any) -> InMemoryCommBus:
        bus = InMemoryCommBus(**(telemetry or {"instrument": False}))
        opts: dict[str, Any] = {"prefix": self.prefix, "registry": REGISTRY, "metrics": False}
        opts["logger"] = NullLogger()
        if self.kind == "redis":
            from jeeves_control_tower.ipc.adapters.redis import RedisTransport

            self.transports.append(await RedisTransport.connect(bus, self.url, **opts))
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


def _prefix(kind: str) -> str:
    return brokers.unique("jt:mp:") + ":" if kind == "redis" else brokers.unique("jtmp")


async def _cleanup(kind: str, url: str, prefix: str) -> None:
    if kind == "nats":
        await nats_cleanup(url, prefix)
        return
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("nats", marks=pytest.mark.nats),
    ]
)
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    kind = request.param
    url = brokers.require(brokers.REDIS_URL if kind == "redis" else brokers.NATS_URL, kind)
    c = Cluster(kind, url, _prefix(kind))
    try:
        yield c
    finally:
        await c.close()
        await _cleanup(kind, url, c.prefix)


async def test_publish_fans_out_to_every_process(cluster: Cluster) -> None:
    subscribers = await asyncio.gather(*(cluster.spawn("subscriber") for _ in range(2)))
    producer = await cluster.bus()
    for i in range(100):
        await producer.publish(Happened(i))
    for worker in subscribers:
        await eventually(lambda w=worker: len(w.values("event")) == 100, timeout=10)
        assert worker.values("event") == list(range(100))  # all, once each, in order


async def test_a_thousand_commands_are_handled_exactly_once_by_three_processes(
    cluster: Cluster,
) -> None:
    consumers = await asyncio.gather(*(cluster.spawn("consumer") for _ in range(3)))
    producer = await cluster.bus()
    for start in range(0, 1000, 100):
        await asyncio.gather(*(producer.send(DoWork(i)) for i in range(start, start + 100)))
    handled = lambda: [n for w in consumers for n in w.values("handled")]  # noqa: E731
    await eventually(lambda: len(handled()) >= 1000, timeout=30)
    await asyncio.sleep(0.3)
    counts = Counter(handled())
    assert sorted(counts) == list(range(1000))  # nothing lost
    assert max(counts.values()) == 1  # nothing handled twice
    assert sum(1 for w in consumers if w.values("handled")) >= 2  # the work was shared


async def test_a_consumer_killed_mid_command_is_replaced(cluster: Cluster) -> None:
    doomed = await cluster.spawn("consumer", hang_on=5, redelivery=1.0)
    producer = await cluster.bus()
    for i in range(10):
        await producer.send(DoWork(i))
    await eventually(lambda: doomed.values("started") == [5], timeout=10)
    doomed.kill()  # SIGKILL while command 5 is in its hands
    survivor = await cluster.spawn("consumer", redelivery=1.0)
    done = lambda: set(doomed.values("handled")) | set(survivor.values("handled"))  # noqa: E731
    await eventually(lambda: done() == set(range(10)), timeout=20)
    assert 5 in survivor.values("handled")
    assert 5 not in doomed.values("handled")


@pytest.mark.parametrize(
    "kind",
    [pytest.param("redis", marks=pytest.mark.redis), pytest.param("nats", marks=pytest.mark.nats)],
)
async def test_broker_restart_mid_stream_loses_nothing(kind: str) -> None:
    server = brokers.RedisServer() if kind == "redis" else brokers.NatsServer()
    with server:
        cluster = Cluster(kind, server.url, _prefix(kind))
        try:
            consumer = await cluster.spawn("consumer")
            producer = await cluster.bus()
            for i in range(100):
                await producer.send(DoWork(i))
            server.restart(signal.SIGKILL)  # the AOF / JetStream file store survives
            for i in range(100, 200):
                await producer.send(DoWork(i))  # buffered (Redis) or retried (NATS)
            await eventually(lambda: set(consumer.values("handled")) >= set(range(200)), timeout=30)
        finally:
            await cluster.close()


async def test_a_cross_process_query_is_one_trace(cluster: Cluster) -> None:
    responder = await cluster.spawn("responder")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    caller = await cluster.bus(tracer_provider=provider, registry=CollectorRegistry(), flow=False)
    assert await caller.query(Ask(21)) == 42
    await eventually(lambda: bool(responder.values("spans")), timeout=10)
    remote = responder.values("spans")[-1]
    local = exporter.get_finished_spans()
    query_span = next(s for s in local if s.name == "query Ask")
    trace_id = f"{query_span.get_span_context().trace_id:032x}"
    assert remote and {s["trace_id"] for s in remote} == {trace_id}
    entry = [s for s in remote if s["parent"] == f"{query_span.get_span_context().span_id:016x}"]
    assert entry, f"no span in the responder is a child of the caller's span: {remote}"
    provider.shutdown()
