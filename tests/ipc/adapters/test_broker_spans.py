"""Spans of messages crossing a real broker: the real destination, the server's address
and port, the consumer group, and a caller's trace id and tracestate kept over the hop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from jeeves_control_tower.testing import eventually
from jeeves_control_tower.testing.messages import Ask, DoWork, Happened
from tests import brokers
from tests.ipc.adapters.cluster import ALL_KINDS, KINDS, URLS, Cluster

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
CALLER = {"traceparent": f"00-{TRACE}-{SPAN}-01", "tracestate": "vendor=abc"}


async def _cluster(kind: str) -> AsyncIterator[Cluster]:
    c = Cluster(kind, brokers.require(URLS[kind], kind))
    try:
        yield c
    finally:
        await c.close()
        await c.cleanup()


@pytest.fixture(params=KINDS)
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """Redis and NATS: brokers read commands in batches (RabbitMQ pushes them one by one)."""
    async for c in _cluster(request.param):
        yield c


@pytest.fixture(params=ALL_KINDS)
async def any_cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    async for c in _cluster(request.param):
        yield c


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_broker_spans_name_the_broker_and_keep_the_callers_trace(
    any_cluster: Cluster,
) -> None:
    cluster = any_cluster
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = {"tracer_provider": provider, "registry": CollectorRegistry(), "flow": False}
    handled = asyncio.Event()
    worker = await cluster.bus(**telemetry)
    worker.register_handler("Ask", lambda q: q.n * 2)
    worker.register_handler("DoWork", lambda c: handled.set())
    caller = await cluster.bus(**telemetry)
    for transport in cluster.transports:
        await transport.sync()

    token = otel_context.attach(propagate.extract(CALLER))
    try:
        assert await caller.query(Ask(21)) == 42
        await caller.send(DoWork(1))
    finally:
        otel_context.detach(token)
    await asyncio.wait_for(handled.wait(), 10)
    await eventually(lambda: any(s.name == "process DoWork" for s in exporter.get_finished_spans()))
    spans = list(exporter.get_finished_spans())
    provider.shutdown()

    # the caller's trace id and tracestate over the hop; every parent exported (or the caller)
    assert {f"{s.context.trace_id:032x}" for s in spans} == {TRACE}
    assert {s.context.trace_state.to_header() for s in spans} == {"vendor=abc"}
    exported = {s.context.span_id for s in spans} | {int(SPAN, 16)}
    assert all(s.parent is not None and s.parent.span_id in exported for s in spans)

    transport = cluster.transports[0]
    host = urlsplit(cluster.url).hostname
    port = urlsplit(cluster.url).port or transport.default_port
    group = {"redis": ("handlers", None), "nats": (None, "responders"), "rabbitmq": (None, None)}[
        cluster.kind
    ]
    by_name: dict[str, list[ReadableSpan]] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    expected = {
        "send DoWork": ("send", None),
        "receive DoWork": ("send", group[0]),
        "process DoWork": ("send", group[0]),
        "query Ask": ("query", None),
        "receive Ask": ("query", group[1]),
        "process Ask": ("query", group[1]),
    }
    for name, (pattern, consumer_group) in expected.items():
        (span,) = by_name[name]
        a = attrs(span)
        assert a["messaging.system"] == cluster.kind, name
        assert a["messaging.destination.name"] == transport.destination(pattern, name.split()[1])
        assert (a["server.address"], a["server.port"]) == (host, port), name
        assert a.get("messaging.consumer.group.name") == consumer_group, name


async def test_a_batch_read_links_its_messages(cluster: Cluster) -> None:
    """Commands stored before their handler exists are read in one batch: one ``receive
    <stream/subject>`` span (CLIENT, a root) counts them and links each producer span."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = {"tracer_provider": provider, "registry": CollectorRegistry(), "flow": False}
    caller = await cluster.bus(**telemetry)
    for i in range(5):
        await caller.send(DoWork(i))
    handled: list[int] = []
    worker = await cluster.bus(**telemetry)
    worker.register_handler("DoWork", lambda c: handled.append(c.n))
    await eventually(lambda: len(handled) == 5, timeout=10)
    destination = cluster.transports[1].destination("send", "DoWork")
    batch_name = f"receive {destination}"
    await eventually(lambda: any(s.name == batch_name for s in exporter.get_finished_spans()))
    spans = list(exporter.get_finished_spans())
    provider.shutdown()

    (batch,) = [s for s in spans if s.name == batch_name]
    assert batch.kind is SpanKind.CLIENT and batch.parent is None
    a = attrs(batch)
    assert a["messaging.batch.message_count"] == 5
    assert a["messaging.operation.type"] == "receive"
    assert a["messaging.destination.name"] == destination
    assert a.get("messaging.consumer.group.name") == (
        "handlers" if cluster.kind == "redis" else None
    )
    sends = {s.context.span_id for s in spans if s.name == "send DoWork"}
    assert len(sends) == 5
    assert {link.context.span_id for link in batch.links} == sends


@pytest.mark.nats
async def test_an_event_batch_frame_links_its_events() -> None:
    """NATS packs events published together into one frame: its ``receive`` span counts
    them and links each event's producer span."""
    cluster = Cluster("nats", brokers.require(brokers.NATS_URL, "nats"))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = {"tracer_provider": provider, "registry": CollectorRegistry(), "flow": False}
    try:
        seen: list[int] = []
        subscriber = await cluster.bus(**telemetry)
        subscriber.subscribe("Happened", lambda e: seen.append(e.n))
        publisher = await cluster.bus(**telemetry)
        for transport in cluster.transports:
            await transport.sync()
        await asyncio.gather(*(publisher.publish(Happened(i)) for i in range(50)))
        await eventually(lambda: len(seen) == 50, timeout=10)
    finally:
        await cluster.close()
        await cluster.cleanup()
    spans = list(exporter.get_finished_spans())
    provider.shutdown()
    destination = cluster.transports[0].destination("publish", "Happened")
    batches = [s for s in spans if s.name == f"receive {destination}"]
    assert batches, "no event batch frame was read"
    publishes = {s.context.span_id for s in spans if s.name == "publish Happened"}
    for batch in batches:
        count = attrs(batch)["messaging.batch.message_count"]
        assert isinstance(count, int) and count >= 2
        linked = {link.context.span_id for link in batch.links}
        assert len(linked) == count and linked <= publishes
