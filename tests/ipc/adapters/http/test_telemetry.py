"""HTTP client spans next to the dispatch spans of an instrumented coordinator, and the
schema URL kept equal to the observability package's."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus, RetryPolicy
from jeeves_control_tower.ipc.adapters.http import HttpPool, HttpService
from jeeves_control_tower.ipc.adapters.http.telemetry import SCHEMA_URL
from jeeves_control_tower.logging import NullLogger
from jeeves_control_tower.observability import semconv
from jeeves_control_tower.types import DispatchTarget, Envelope, RequestContext, ServiceDescriptor
from tests.ipc.adapters.http.servers import uvicorn_app


def test_schema_url_is_the_packages() -> None:
    assert SCHEMA_URL == semconv.SCHEMA_URL


async def test_client_span_is_a_child_of_the_dispatch_attempt() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    coordinator = CommBusCoordinator(
        NullLogger(),
        InMemoryCommBus(instrument=False),
        retry_policy=RetryPolicy(initial_delay=0.001, jitter_floor=1.0),
        tracer_provider=provider,
        registry=CollectorRegistry(),
        flow=False,
    )
    calls = []

    async def endpoint(request: Request) -> Response:
        calls.append(request.headers["traceparent"])
        if len(calls) == 1:
            return Response(status_code=503)
        return JSONResponse({"outputs": {"ok": 1}})

    app = Starlette(routes=[Route("/d", endpoint, methods=["POST"])])
    pool = HttpPool()
    try:
        async with uvicorn_app(app) as base:
            svc = HttpService(f"{base}/d", pool=pool, tracer_provider=provider, metrics=False)
            coordinator.register_service(ServiceDescriptor(name="billing", service_type="w"))
            coordinator.register_handler("billing", svc)
            e = Envelope(request_context=RequestContext(request_id="r", capability="c"))
            out = await coordinator.dispatch(DispatchTarget("billing", "charge"), e)
    finally:
        await pool.aclose()
    assert not out.terminated and out.outputs == {"ok": 1}
    spans = exporter.get_finished_spans()
    clients = [s for s in spans if s.kind is SpanKind.CLIENT and s.name == "POST"]
    assert len(clients) == 2
    by_id = {s.context.span_id: s for s in spans}
    for client, traceparent in zip(clients, calls, strict=True):
        assert client.parent is not None
        attempt = by_id[client.parent.span_id]  # the dispatch attempt span
        assert attempt.attributes is not None
        assert attempt.attributes.get("jeeves.dispatch.service") == "billing"
        assert traceparent.split("-")[2] == f"{client.context.span_id:016x}"
    assert clients[0].attributes is not None and clients[0].attributes["error.type"] == "503"
