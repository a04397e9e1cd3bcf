"""End to end: spans exported over OTLP/HTTP to a local receiver keep their parent links."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.observability import FlowRecorder
from jeeves_control_tower.types import Envelope

from .support import Stored, envelope, register, target


class Receiver:
    """A minimal OTLP/HTTP trace receiver that decodes what it is sent."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                assert self.path == "/v1/traces"
                assert self.headers["Content-Type"] == "application/x-protobuf"
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.requests.append(request)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def spans(self) -> list[tuple[str, str, ProtoSpan]]:
        """(service.name, scope name, span) for every span received."""
        out: list[tuple[str, str, ProtoSpan]] = []
        for request in self.requests:
            for rs in request.resource_spans:
                service = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    out.extend((service["service.name"], ss.scope.name, s) for s in ss.spans)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


async def test_parent_links_survive_otlp_export(receiver: Receiver) -> None:
    provider = TracerProvider(
        resource=Resource.create({"service.name": "jeeves-test"}), shutdown_on_exit=False
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint)))
    options: dict[str, Any] = {
        "tracer_provider": provider,
        "registry": CollectorRegistry(),
        "flow": FlowRecorder(),
    }
    bus = InMemoryCommBus(**options)
    coordinator = CommBusCoordinator(None, bus, **options)

    async def dispatch_handler(e: Envelope) -> Envelope:
        await asyncio.sleep(0)
        await bus.publish(Stored())
        return e

    bus.subscribe("Stored", lambda e: None)
    register(coordinator, handler=dispatch_handler)
    await coordinator.dispatch(target(), envelope())
    assert provider.force_flush(10_000)
    provider.shutdown()

    received = receiver.spans()
    assert {(service, scope) for service, scope, _ in received} == {
        ("jeeves-test", "jeeves_control_tower")
    }
    spans = {s.name: s for _, _, s in received}
    assert sorted(spans) == ["dispatch svc", "process Stored", "process svc", "publish Stored"]
    chain = ["dispatch svc", "process svc", "publish Stored", "process Stored"]
    assert spans["dispatch svc"].parent_span_id == b""
    for parent, child in itertools.pairwise(chain):
        assert spans[child].parent_span_id == spans[parent].span_id, child
    assert len({s.trace_id for s in spans.values()}) == 1
    assert spans["dispatch svc"].kind == ProtoSpan.SPAN_KIND_PRODUCER
    assert spans["process svc"].kind == ProtoSpan.SPAN_KIND_CONSUMER
    assert spans["publish Stored"].kind == ProtoSpan.SPAN_KIND_PRODUCER
    assert spans["process Stored"].kind == ProtoSpan.SPAN_KIND_CONSUMER
    system = {a.key: a.value.string_value for a in spans["publish Stored"].attributes}
    assert system["messaging.system"] == "jeeves.commbus"
