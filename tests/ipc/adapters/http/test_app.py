"""The bus's HTTP face: each pattern, validation, bounds, token, problem details, trace
context, and one face serving another process's HttpService over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import Mount

from jeeves_control_tower.ipc.adapters.http import HttpPool, HttpService, create_app
from jeeves_control_tower.types import DispatchTarget, Envelope, RequestContext, ServiceDescriptor
from tests.ipc.adapters.http.messages import ChargeCard, Currency, Wired, registry
from tests.ipc.adapters.http.servers import uvicorn_app

ORDER = {"order_id": "o1", "lines": [1, 2], "total": {"amount": 3, "currency": "USD"}}
PROBLEM = "application/problem+json"


@pytest.fixture
def wired() -> Wired:
    return Wired()


def client(app: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://face")


@pytest.fixture
async def face(wired: Wired) -> AsyncIterator[httpx2.AsyncClient]:
    app = create_app(wired.coordinator, registry=registry(), metrics=False)
    async with client(app) as c:
        yield c


def envelope_body(service: str = "svc", **target: Any) -> dict[str, Any]:
    e = Envelope(request_context=RequestContext(request_id="r1", capability="c"))
    return {"target": {"service_name": service, "method": "run", **target}, "envelope": e.to_dict()}


async def test_publish_send_query(face: httpx2.AsyncClient, wired: Wired) -> None:
    r = await face.post("/v1/publish/OrderPlaced", json=ORDER)
    assert r.status_code == 202 and r.json() == {"status": "accepted"}
    event = wired.events[0]
    assert event.total.currency is Currency.USD and event.total.amount == 3.0
    r = await face.post("/v1/send/ChargeCard", json={"card": "4111", "amount": 5})
    assert r.status_code == 202 and wired.commands == [ChargeCard("4111", 5)]
    r = await face.post("/v1/query/GetBalance", json={"account": "a"})
    assert r.status_code == 200
    assert r.json() == {"type": "Balance", "result": {"account": "a", "cents": 1200}}
    r = await face.post("/v1/query/Untyped", json={"value": {"x": [1]}})
    assert r.json() == {"result": [1, "two", None]}


async def test_dispatch_answers_the_envelope(face: httpx2.AsyncClient) -> None:
    r = await face.post("/v1/dispatch/svc", json=envelope_body(priority="high"))
    assert r.status_code == 200
    out = Envelope.from_dict(r.json())
    assert out.outputs == {"handled": True} and not out.terminated


@pytest.mark.parametrize(
    ("path", "body", "status", "kind"),
    [
        ("/v1/publish/Nope", {}, 404, "not-found"),
        ("/v1/send/OrderPlaced", ORDER, 404, "not-found"),  # an event is not sent
        ("/v1/publish/OrderPlaced", {**ORDER, "lines": ["x"]}, 422, "invalid-payload"),
        ("/v1/publish/OrderPlaced", {**ORDER, "extra": 1}, 422, "invalid-payload"),
        ("/v1/publish/OrderPlaced", {"order_id": "o"}, 422, "invalid-payload"),
        ("/v1/publish/OrderPlaced", [1], 422, "invalid-payload"),
        ("/v1/publish/Envelope", {}, 404, "not-found"),  # built-ins are not offered
        ("/v1/dispatch/nope", envelope_body("nope"), 404, "not-found"),
        ("/v1/dispatch/svc", {"target": {"method": 1}, "envelope": {}}, 422, "invalid-payload"),
        ("/v1/dispatch/svc", {"target": {}, "envelope": {}}, 422, "invalid-payload"),
        ("/v1/dispatch/svc", envelope_body(priority="urgent"), 422, "invalid-payload"),
        (
            "/v1/dispatch/svc",
            {**envelope_body(), "envelope": {"request_context": 1}},
            422,
            "invalid-payload",
        ),
    ],
)
async def test_problems(
    face: httpx2.AsyncClient, path: str, body: Any, status: int, kind: str
) -> None:
    r = await face.post(path, json=body)
    assert r.status_code == status
    assert r.headers["content-type"] == PROBLEM
    problem = r.json()
    assert problem["status"] == status and problem["instance"] == path
    assert problem["type"].endswith(f":problem:{kind}") and problem["title"]


async def test_malformed_media_and_size(wired: Wired) -> None:
    app = create_app(wired.coordinator, registry=registry(), max_body_bytes=64, metrics=False)
    async with client(app) as c:
        r = await c.post(
            "/v1/publish/OrderPlaced", content=b"{", headers={"content-type": "application/json"}
        )
        assert r.status_code == 400
        r = await c.post(
            "/v1/publish/OrderPlaced", content=b"NaN", headers={"content-type": "application/json"}
        )
        assert r.status_code == 400
        r = await c.post(
            "/v1/publish/OrderPlaced", content=b"{}", headers={"content-type": "text/plain"}
        )
        assert r.status_code == 415
        r = await c.post("/v1/publish/OrderPlaced", json={"order_id": "x" * 100})
        assert r.status_code == 413

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: bounded as read
            for _ in range(10):
                yield b"          "

        r = await c.post(
            "/v1/publish/OrderPlaced",
            content=chunks(),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 413
        deep = b"[" * 30 + b"]" * 30
        r = await c.post(
            "/v1/query/Untyped", content=deep, headers={"content-type": "application/json"}
        )
        assert r.status_code == 422  # valid JSON, not an object
    assert wired.events == []


async def test_token_guards_everything(wired: Wired) -> None:
    app = create_app(wired.coordinator, registry=registry(), token="s3cret", metrics=False)
    async with client(app) as c:
        for path in ("/openapi.json", "/asyncapi.json"):
            r = await c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = await c.post(
            "/v1/publish/OrderPlaced", json=ORDER, headers={"Authorization": "Bearer nope"}
        )
        assert r.status_code == 401 and wired.events == []
        ok = {"Authorization": "Bearer s3cret"}
        r = await c.post("/v1/publish/OrderPlaced", json=ORDER, headers=ok)
        assert r.status_code == 202
        r = await c.get("/openapi.json", headers=ok)
        assert r.json()["security"] == [{"bearer": []}]


async def test_query_failures() -> None:
    from jeeves_control_tower.ipc import InMemoryCommBus

    bus = InMemoryCommBus(query_timeout=5.0, instrument=False)
    gate = asyncio.Event()

    async def stuck(q: Any) -> Any:
        await gate.wait()

    def broken(q: Any) -> Any:
        raise RuntimeError("secret internals")

    bus.register_handler("GetBalance", stuck)
    bus.register_handler("Untyped", broken)
    app = create_app(bus, registry=registry(), timeout=2.0, metrics=False)
    async with client(app) as c:
        r = await c.post(
            "/v1/query/GetBalance", json={"account": "a"}, headers={"Jeeves-Deadline-Ms": "100"}
        )
        assert r.status_code == 504 and r.json()["type"].endswith("timeout")
        r = await c.post("/v1/query/Untyped", json={"value": 1})
        assert r.status_code == 500 and "secret" not in r.text
        assert "RuntimeError" in r.json()["detail"]
        r = await c.post("/v1/query/Balance", json={"account": "a", "cents": 1})
        assert r.status_code == 404 and r.json()["type"].endswith("no-handler")
        r = await c.post("/v1/dispatch/svc", json=envelope_body())  # a bus: no dispatch
        assert r.status_code == 404
    gate.set()


async def test_face_serves_another_process_httpservice(wired: Wired) -> None:
    """One process's HttpService dispatching through another process's face."""
    app = create_app(wired.coordinator, registry=registry(), token="t", metrics=False)
    caller = Wired()
    pool = HttpPool()
    try:
        async with uvicorn_app(app) as base:
            caller.coordinator.register_service(ServiceDescriptor(name="far", service_type="w"))
            caller.coordinator.register_handler(
                "far", HttpService(f"{base}/v1/dispatch/svc", token="t", pool=pool, metrics=False)
            )
            e = Envelope(request_context=RequestContext(request_id="r9", capability="c"))
            out = await caller.coordinator.dispatch(
                DispatchTarget("far", "run", timeout_seconds=3), e
            )
            assert not out.terminated and out.outputs == {"handled": True}
            caller.coordinator.register_service(ServiceDescriptor(name="far2", service_type="w"))
            caller.coordinator.register_handler(
                "far2",
                HttpService(f"{base}/v1/dispatch/svc", token="wrong", pool=pool, metrics=False),
            )
            out = await caller.coordinator.dispatch(DispatchTarget("far2", "run"), e)
            assert out.terminated and "HTTP 401" in (out.termination_reason or "")
    finally:
        await pool.aclose()


async def test_mounted_server_span_continues_the_callers_trace(wired: Wired) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    metrics = CollectorRegistry()
    face_app = create_app(
        wired.coordinator, registry=registry(), tracer_provider=provider, metrics_registry=metrics
    )
    outer = Starlette(routes=[Mount("/bus", app=face_app)])
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    async with client(outer) as c:
        r = await c.post("/bus/v1/publish/OrderPlaced", json=ORDER, headers=headers)
        assert r.status_code == 202
        r = await c.post("/bus/v1/publish/OrderPlaced", json={}, headers=headers)
        assert r.status_code == 422
        doc = (await c.get("/bus/openapi.json")).json()
        assert doc["servers"] == [{"url": "/bus"}]
    spans = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert [s.name for s in spans] == ["POST /v1/publish/{type}"] * 2
    for s in spans:
        assert f"{s.context.trace_id:032x}" == trace_id
        assert s.parent is not None and s.parent.span_id == 0x00F067AA0BA902B7
    assert (
        spans[0].attributes is not None and spans[0].attributes["http.response.status_code"] == 202
    )
    assert (
        spans[1].attributes is not None and spans[1].attributes["http.response.status_code"] == 422
    )

    def sample(name: str, labels: dict[str, str]) -> float | None:
        return metrics.get_sample_value(name, {"transport": "http", **labels})

    assert (
        sample("commbus_wire_messages_total", {"direction": "received", "pattern": "publish"}) == 1
    )
    assert sample("commbus_wire_rejected_total", {"reason": "bad_field"}) == 1


async def test_documents(face: httpx2.AsyncClient) -> None:
    openapi = (await face.get("/openapi.json")).json()
    assert openapi["openapi"] == "3.1.0"
    assert set(openapi["paths"]) >= {
        "/v1/publish/OrderPlaced",
        "/v1/send/ChargeCard",
        "/v1/query/GetBalance",
        "/v1/dispatch/{service}",
    }
    body = openapi["paths"]["/v1/publish/OrderPlaced"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OrderPlaced"
    }
    asyncapi = (await face.get("/asyncapi.json")).json()
    assert asyncapi["servers"] == {
        "http": {
            "host": "face",
            "protocol": "http",
            "description": "The bus's HTTP face (OpenAPI: /openapi.json).",
        }
    }
    assert asyncapi["channels"]["http.query.GetBalance"]["address"] == "/v1/query/GetBalance"


async def test_documents_never_take_the_host_header(wired: Wired) -> None:
    """The documents are cached: a caller's ``Host`` must not become everyone's server."""
    app = create_app(wired.coordinator, registry=registry(), metrics=False)
    evil = {"Host": "attacker.example:666", "X-Forwarded-Host": "attacker.example"}
    async with uvicorn_app(app) as base, httpx2.AsyncClient() as c:
        for path in ("/asyncapi.json", "/openapi.json"):
            r = await c.get(base + path, headers=evil)
            assert r.status_code == 200 and "attacker" not in r.text
        asyncapi = (await c.get(base + "/asyncapi.json")).json()
        assert asyncapi["servers"]["http"]["host"] == base.removeprefix("http://")
    public = create_app(
        wired.coordinator, registry=registry(), public_url="https://api.example/bus/"
    )
    async with client(public) as c:
        asyncapi = (await c.get("/asyncapi.json", headers=evil)).json()
        server = asyncapi["servers"]["https"]
        assert (server["host"], server["protocol"], server["pathname"]) == (
            "api.example",
            "https",
            "/bus",
        )
        openapi = (await c.get("/openapi.json", headers=evil)).json()
        assert openapi["servers"] == [{"url": "https://api.example/bus"}]
    with pytest.raises(ValueError, match="public_url"):
        create_app(wired.coordinator, registry=registry(), public_url="ftp://x")


async def test_an_outside_callers_baggage_and_long_tracestate_stay_out(wired: Wired) -> None:
    # What the face makes current goes into every frame the bus sends for the request: an
    # outside caller's baggage only when asked for, its tracestate only up to 512 chars.
    from opentelemetry import baggage, trace

    seen: list[tuple[dict[str, object], str]] = []

    def spy(_: Any) -> None:
        state = trace.get_current_span().get_span_context().trace_state
        seen.append((dict(baggage.get_all()), state.to_header()))

    wired.bus.subscribe("OrderPlaced", spy)
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    long_state = ",".join(f"k{i}={'v' * 30}" for i in range(20))  # valid, 20 members, 699 chars
    for allowed in (False, True):
        app = create_app(
            wired.coordinator,
            registry=registry(),
            tracer_provider=TracerProvider(),
            metrics=False,
            baggage=allowed,
        )
        async with client(app) as c:
            for state in ("vendor=abc", long_state):
                headers = {"traceparent": parent, "tracestate": state, "baggage": "user=alice"}
                r = await c.post("/v1/publish/OrderPlaced", json=ORDER, headers=headers)
                assert r.status_code == 202
            alone = {"baggage": "user=bob"}  # no trace context: baggage still as configured
            r = await c.post("/v1/publish/OrderPlaced", json=ORDER, headers=alone)
            assert r.status_code == 202
    no_baggage: dict[str, object] = {}
    alice: dict[str, object] = {"user": "alice"}
    assert seen == [
        (no_baggage, "vendor=abc"),
        (no_baggage, ""),
        (no_baggage, ""),
        (alice, "vendor=abc"),
        (alice, ""),
        ({"user": "bob"}, ""),
    ]
    with pytest.raises(TypeError, match="CommBusCoordinator or an InMemoryCommBus"):
        create_app(object())


async def test_an_unknown_route_or_method_is_a_problem_too(wired: Wired) -> None:
    app = Starlette(routes=[Mount("/bus", app=create_app(wired.coordinator, metrics=False))])
    async with client(app) as c:
        wrong_method = await c.get("/bus/v1/publish/OrderPlaced")
        nowhere = await c.post("/bus/v2/nothing", json={})
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert wrong_method.headers["content-type"] == "application/problem+json"
    assert wrong_method.json()["type"].endswith(":problem:method-not-allowed")
    assert nowhere.status_code == 404 and nowhere.json()["type"].endswith(":problem:not-found")
    assert nowhere.json()["instance"] == "/bus/v2/nothing"


async def test_the_asyncapi_document_lists_the_buss_own_transport_by_default(
    wired: Wired,
) -> None:
    from jeeves_control_tower.ipc.adapters.grpc import GrpcTransport

    app = create_app(wired.coordinator, registry=registry(), metrics=False)
    async with client(app) as c:
        before = (await c.get("/asyncapi.json")).json()
        # attached after the face was made (as serve-http's factories do), never connected
        hub_transport = GrpcTransport(wired.bus, "grpcs://hub.example:443", metrics=False)
        wired.bus.attach_transport(hub_transport)
        after = (await c.get("/asyncapi.json")).json()
    assert set(before["servers"]) == {"http"}
    assert len(after["servers"]) == 2
    hub = next(s for name, s in after["servers"].items() if name != "http")
    assert (hub["host"], hub["protocol"]) == ("hub.example:443", "grpcs")
    only_given = create_app(wired.coordinator, registry=registry(), metrics=False, transports=[])
    async with client(only_given) as c:
        assert set((await c.get("/asyncapi.json")).json()["servers"]) == {"http"}


async def test_a_wire_error_a_local_query_handler_raises_is_not_the_callers_fault() -> None:
    from jeeves_control_tower.ipc import InMemoryCommBus
    from jeeves_control_tower.ipc.adapters.wire import WireError

    def broken(_: Any) -> Any:
        raise WireError("too_deep", "the handler's own decoding")

    bus = InMemoryCommBus(instrument=False)
    bus.register_handler("Untyped", broken)
    async with client(create_app(bus, registry=registry(), metrics=False)) as c:
        r = await c.post("/v1/query/Untyped", json={"value": 1})
    assert r.status_code == 500 and r.json()["type"].endswith(":problem:handler-failed")
