"""Real OS processes talking through real brokers (see ``mp_worker.py`` and ``cluster.py``).

Fan-out across processes, exactly-one handling of 1,000 commands by 3 consumer processes,
one trace across a cross-process query, and the caller's sampling decision and tracestate
kept across processes. The fault tests (a consumer process killed
mid-command, a broker killed and restarted) are in ``tests/reliability/test_broker_faults.py``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from prometheus_client import CollectorRegistry

from jeeves_control_tower.testing import eventually
from jeeves_control_tower.testing.messages import Ask, DoWork, Happened
from tests import brokers
from tests.ipc.adapters.cluster import ALL_KINDS, URLS, Cluster, Worker

pytestmark = pytest.mark.slow


@pytest.fixture(params=ALL_KINDS)
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    kind = request.param
    url = brokers.require(URLS[kind], kind)
    c = Cluster(kind, url)
    try:
        yield c
    finally:
        await c.close()
        await c.cleanup()


async def test_publish_fans_out_to_every_process(cluster: Cluster) -> None:
    subscribers = await asyncio.gather(*(cluster.spawn("subscriber") for _ in range(2)))
    producer = await cluster.bus()
    for i in range(100):
        await producer.publish(Happened(i))
    for worker in subscribers:

        def got_all(w: Worker = worker) -> bool:
            return len(w.values("event")) == 100

        await eventually(got_all, timeout=10)
        assert worker.values("event") == list(range(100))  # all, once each, in order


async def test_a_thousand_commands_are_handled_exactly_once_by_three_processes(
    cluster: Cluster,
) -> None:
    consumers = await asyncio.gather(*(cluster.spawn("consumer") for _ in range(3)))
    producer = await cluster.bus()
    for start in range(0, 1000, 100):
        await asyncio.gather(*(producer.send(DoWork(i)) for i in range(start, start + 100)))

    def handled() -> list[int]:
        return [n for w in consumers for n in w.values("handled")]

    await eventually(lambda: len(handled()) >= 1000, timeout=30)
    await asyncio.sleep(0.3)
    counts = Counter(handled())
    assert sorted(counts) == list(range(1000))  # nothing lost
    assert max(counts.values()) == 1  # nothing handled twice
    assert sum(1 for w in consumers if w.values("handled")) >= 2  # the work was shared


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
    query_context = query_span.get_span_context()
    assert query_context is not None
    trace_id = f"{query_context.trace_id:032x}"
    assert remote and {s["trace_id"] for s in remote} == {trace_id}
    entry = [s for s in remote if s["parent"] == f"{query_context.span_id:016x}"]
    assert entry, f"no span in the responder is a child of the caller's span: {remote}"
    provider.shutdown()


def _caller_context(flags: str) -> tuple[str, str, Any]:
    """A fixed W3C caller (trace id, span id) with ``flags`` and a vendor tracestate, as the
    configured propagator extracts it."""
    trace_hex, span_hex = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    carrier = {"traceparent": f"00-{trace_hex}-{span_hex}-{flags}", "tracestate": "vendor=abc"}
    return trace_hex, span_hex, propagate.extract(carrier)


@pytest.mark.parametrize("flags", ["00", "01"])
async def test_the_callers_sampling_decision_and_tracestate_cross_processes(
    cluster: Cluster, flags: str
) -> None:
    """Under ``ParentBased(ALWAYS_OFF)`` in both processes: an unsampled caller gets not one
    span exported anywhere; a sampled one gets every span of the query, the remote handler
    and its dispatch exported under its trace id and tracestate, each span's parent
    exported too (or the caller's own span)."""
    responder = await cluster.spawn("responder", sampler="parent_off", dispatch=True)
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    caller = await cluster.bus(tracer_provider=provider, registry=CollectorRegistry(), flow=False)
    trace_hex, span_hex, context = _caller_context(flags)
    token = otel_context.attach(context)
    try:
        assert await caller.query(Ask(21)) == 42
    finally:
        otel_context.detach(token)
    await eventually(lambda: bool(responder.values("spans")), timeout=10)
    remote = responder.values("spans")[-1]
    local = [
        {
            "name": s.name,
            "trace_id": f"{s.context.trace_id:032x}",
            "span_id": f"{s.context.span_id:016x}",
            "parent": f"{s.parent.span_id:016x}" if s.parent is not None else None,
            "trace_state": s.context.trace_state.to_header(),
            "kind": s.kind.name,
        }
        for s in exporter.get_finished_spans()
    ]
    provider.shutdown()
    if flags == "00":
        assert local == [] and remote == []
        return
    spans = local + remote
    names = {s["name"] for s in spans}
    assert {"query Ask", "receive Ask", "process Ask", "dispatch svc", "process svc"} <= names
    assert {s["trace_id"] for s in spans} == {trace_hex}
    assert {s["trace_state"] for s in spans} == {"vendor=abc"}
    exported = {s["span_id"] for s in spans} | {span_hex}
    assert all(s["parent"] in exported for s in spans), spans
    kinds = {s["name"]: s["kind"] for s in spans}
    assert kinds == {
        "query Ask": "PRODUCER",
        "receive Ask": "CLIENT",
        "process Ask": "CONSUMER",
        "dispatch svc": "PRODUCER",
        "process svc": "CONSUMER",
    }
