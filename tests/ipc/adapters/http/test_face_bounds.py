"""The face against hostile requests, driven at the ASGI level (no server in between): a
body that never finishes, a client that goes away, bad deadline headers, huge names."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc.adapters.http import create_app
from jeeves_control_tower.ipc.adapters.http.envelope import MAX_ID
from jeeves_control_tower.ipc.adapters.http.openapi import ENVELOPE_SCHEMA
from tests.helpers import ListLogger
from tests.ipc.adapters.http.messages import Wired, registry


@dataclass
class Answer:
    status: int | None
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    app: Any,
    path: str,
    chunks: Sequence[bytes],
    *,
    then: str = "end",
    headers: dict[str, str] | None = None,
) -> Answer:
    """One ``POST path`` whose body arrives as ``chunks``; ``then`` is what the client
    does next: ``end`` (the body is complete), ``hang`` (sends nothing more, stays) or
    ``disconnect``."""
    raw_headers = {"content-type": "application/json", **(headers or {})}
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in raw_headers.items()],
        "client": ("127.0.0.1", 1234),
        "server": ("face", 80),
    }
    events: list[dict[str, Any]] = [
        {"type": "http.request", "body": c, "more_body": True} for c in chunks
    ]
    if then == "end":
        events.append({"type": "http.request", "body": b"", "more_body": False})
    elif then == "disconnect":
        events.append({"type": "http.disconnect"})

    async def receive() -> dict[str, Any]:
        if events:
            return events.pop(0)
        await asyncio.Event().wait()  # a client that never sends again
        raise AssertionError("unreachable")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 10)
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    return Answer(
        start["status"] if start else None,
        {k.decode(): v.decode() for k, v in start["headers"]} if start else {},
        b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
    )


def rejected(metrics: CollectorRegistry, reason: str) -> float | None:
    return metrics.get_sample_value(
        "commbus_wire_rejected_total", {"transport": "http", "reason": reason}
    )


async def test_a_body_that_stops_coming_is_answered_408() -> None:
    metrics = CollectorRegistry()
    wired = Wired()
    app = create_app(
        wired.coordinator, registry=registry(), read_timeout=0.3, metrics_registry=metrics
    )
    answer = await call(
        app, "/v1/query/GetBalance", [b'{"acc'], then="hang", headers={"content-length": "100"}
    )
    assert answer.status == 408 and answer.headers["connection"] == "close"
    assert answer.json()["type"].endswith(":problem:request-timeout")
    assert rejected(metrics, "read_timeout") == 1
    # A body trickling in one byte at a time is bounded by the same single deadline.
    slow = create_app(wired.coordinator, registry=registry(), read_timeout=0.3, metrics=False)
    answer = await call(slow, "/v1/query/GetBalance", [b" "] * 5, then="hang")
    assert answer.status == 408


async def test_a_client_leaving_mid_body_is_not_a_server_fault() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    metrics = CollectorRegistry()
    logger = ListLogger()
    wired = Wired()
    app = create_app(
        wired.coordinator,
        registry=registry(),
        tracer_provider=provider,
        metrics_registry=metrics,
        logger=logger,
    )
    await call(
        app,
        "/v1/query/GetBalance",
        [b'{"acc'],
        then="disconnect",
        headers={"content-length": "100"},
    )
    (span,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == "client_disconnect"
    assert "http.response.status_code" not in attributes
    assert span.status.status_code is StatusCode.UNSET
    assert rejected(metrics, "client_disconnect") == 1
    assert logger.messages("error") == []
    assert logger.messages("info") == ["http_face_client_disconnected"]


@pytest.mark.parametrize("given", ["\u00b2", "9" * 5000, "-1", "1e3", "0x10", "1234567890", ""])
async def test_a_malformed_deadline_header_is_a_400(given: str) -> None:
    metrics = CollectorRegistry()
    wired = Wired()
    app = create_app(wired.coordinator, registry=registry(), metrics_registry=metrics)
    body = json.dumps({"account": "a"}).encode()
    for path in ("/v1/query/GetBalance", "/v1/dispatch/svc"):
        answer = await call(app, path, [body], headers={"jeeves-deadline-ms": given})
        assert answer.status == 400, (path, answer.body[:200])
        problem = answer.json()
        assert problem["type"].endswith(":problem:bad-header")
        assert "Jeeves-Deadline-Ms" in problem["detail"] and len(answer.body) < 1000
    assert rejected(metrics, "malformed") == 2
    # Only queries and dispatches read it (as documented in /openapi.json).
    order = {"order_id": "o1", "lines": [1], "total": {"amount": 3, "currency": "USD"}}
    answer = await call(
        app,
        "/v1/publish/OrderPlaced",
        [json.dumps(order).encode()],
        headers={"jeeves-deadline-ms": given},
    )
    assert answer.status == 202


async def test_a_zero_deadline_header_leaves_the_servers_bound() -> None:
    app = create_app(Wired().coordinator, registry=registry(), metrics=False)
    answer = await call(
        app, "/v1/query/GetBalance", [b'{"account": "a"}'], headers={"jeeves-deadline-ms": "0"}
    )
    assert answer.status == 200 and answer.json()["result"]["cents"] == 1200


def dispatch_body(**changes: Any) -> dict[str, Any]:
    context = {"request_id": "r1", "capability": "c", **changes.pop("context", {})}
    target = {"service_name": "svc", "method": "run", **changes.pop("target", {})}
    envelope = {"request_context": context, **changes}
    return {"target": target, "envelope": envelope}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (dispatch_body(target={"method": "m" * 300_000}), "target.method"),
        (dispatch_body(target={"service_name": "s" * 257}), "target.service_name"),
        (dispatch_body(target={"method": "run\n"}), "target.method"),
        (dispatch_body(target={"priority": "p" * 10_000}), "target.priority"),
        (dispatch_body(context={"request_id": "r" * 300_000}), "request_context.request_id"),
        (dispatch_body(context={"capability": "c" * 257}), "request_context.capability"),
        (dispatch_body(context={"trace_id": "\x00"}), "request_context.trace_id"),
        (dispatch_body(request_id="r" * 257), "envelope.request_id"),
        (dispatch_body(envelope_id="e" * 257), "envelope.envelope_id"),
        (dispatch_body(session_id="s" * 257), "envelope.session_id"),
    ],
)
async def test_dispatch_identifiers_are_bounded(body: dict[str, Any], field: str) -> None:
    wired = Wired()
    app = create_app(wired.coordinator, registry=registry(), metrics=False)
    answer = await call(app, "/v1/dispatch/svc", [json.dumps(body).encode()])
    assert answer.status == 422, answer.body[:200]
    problem = answer.json()
    assert problem["type"].endswith(":problem:invalid-payload") and field in problem["detail"]
    assert len(answer.body) < 1000  # the value is never echoed


async def test_dispatch_identifiers_at_the_bound_are_taken() -> None:
    app = create_app(Wired().coordinator, registry=registry(), metrics=False)
    body = dispatch_body(target={"method": "m" * 256}, context={"request_id": "r" * 256})
    answer = await call(app, "/v1/dispatch/svc", [json.dumps(body).encode()])
    assert answer.status == 200
    assert answer.json()["request_context"]["request_id"] == "r" * 256
    context = ENVELOPE_SCHEMA["properties"]["request_context"]["properties"]
    assert context["request_id"]["maxLength"] == MAX_ID == 256  # the contract says so too


async def test_a_payload_the_wire_cannot_carry_is_refused_not_accepted() -> None:
    # Valid for the message class, but nested deeper than the transport's wire allows: a
    # receiver would drop it (too_deep), so the face must say 422, not 202.
    from jeeves_control_tower.testing import TestTransport

    def nest(levels: int) -> Any:
        value: Any = "x"
        for _ in range(levels):
            value = {"k": value}
        return value

    wired = Wired()
    transport = await TestTransport.connect(wired.bus, registry=registry())
    try:
        app = create_app(wired.coordinator, registry=registry(), metrics=False)
        ok = await call(app, "/v1/publish/Untyped", [json.dumps({"value": nest(5)}).encode()])
        assert ok.status == 202 and len(wired.events) == 1
        body = json.dumps({"value": nest(40)}).encode()
        deep = await call(app, "/v1/publish/Untyped", [body])
        assert deep.status == 422, deep.body
        assert deep.json()["type"].endswith(":problem:invalid-payload")
        assert "max_depth=32" in deep.json()["detail"] and len(wired.events) == 1
    finally:
        await transport.close()
