"""The observability endpoint: routes, shapes, auth, bad input, and independence from the
event loop (every request here is made synchronously from the loop's own thread)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.observability import FlowRecorder, ObservabilityServer, serve

from .conftest import Telemetry
from .support import Stored, echo, envelope, http_get, register, target

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@pytest.fixture
def server(instrumented_coordinator: CommBusCoordinator) -> Iterator[ObservabilityServer]:
    with serve(instrumented_coordinator) as srv:
        yield srv


async def traffic(
    instrumented_bus: InMemoryCommBus, instrumented_coordinator: CommBusCoordinator
) -> None:
    instrumented_bus.subscribe("Stored", lambda e: None)
    register(instrumented_coordinator, handler=echo)
    for _ in range(3):
        await instrumented_bus.publish(Stored())
    await instrumented_coordinator.dispatch(target(), envelope())


async def test_routes(
    server: ObservabilityServer,
    instrumented_bus: InMemoryCommBus,
    instrumented_coordinator: CommBusCoordinator,
    tel: Telemetry,
) -> None:
    assert server.url == f"http://127.0.0.1:{server.port}"
    await traffic(instrumented_bus, instrumented_coordinator)

    health = http_get(f"{server.url}/healthz")
    assert (health.status, health.json()) == (200, {"status": "ok"})
    assert health.headers["Content-Type"] == "application/json"

    metrics = http_get(f"{server.url}/metrics")
    assert metrics.status == 200
    assert metrics.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = metrics.body.decode()
    assert (
        'commbus_messages_total{message_type="Stored",outcome="ok",pattern="publish"} 3.0' in text
    )
    assert "trace_id" not in text

    services = http_get(f"{server.url}/api/services").json()
    assert services["generated_at"] > 1e9
    assert [(s["name"], s["requests"]) for s in services["services"]] == [("svc", 1)]

    flow = http_get(f"{server.url}/api/flow?after=1&limit=2").json()
    assert flow["last_seq"] == 4
    assert [r["seq"] for r in flow["records"]] == [2, 3]
    assert http_get(f"{server.url}/api/flow").json() == tel.flow.flow()

    stats = http_get(f"{server.url}/api/stats").json()
    assert stats["messages"]["publish"] == {"ok": 3}
    assert stats["dispatch"] == {"ok": 1}

    missing = http_get(f"{server.url}/nope")
    assert missing.status == 404 and "error" in missing.json()


async def test_openmetrics_when_asked(
    server: ObservabilityServer,
    instrumented_bus: InMemoryCommBus,
    instrumented_coordinator: CommBusCoordinator,
) -> None:
    await traffic(instrumented_bus, instrumented_coordinator)
    r = http_get(f"{server.url}/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.status == 200
    assert r.headers["Content-Type"].startswith(OPENMETRICS)
    text = r.body.decode()
    assert text.endswith("# EOF\n")
    assert '# {trace_id="' in text


@pytest.mark.parametrize(
    "query",
    [
        "after=-1",
        "after=abc",
        "after=",
        "limit=0",
        "limit=1001",
        "limit=1.5",
        "after=1&after=2",
        "x=1",
    ],
)
def test_bad_flow_parameters_are_400(server: ObservabilityServer, query: str) -> None:
    r = http_get(f"{server.url}/api/flow?{query}")
    assert r.status == 400
    assert isinstance(r.json()["error"], str)


def test_limit_bounds_are_accepted(server: ObservabilityServer) -> None:
    for query in ("limit=1", "limit=1000", "after=0", "after=99999999999"):
        assert http_get(f"{server.url}/api/flow?{query}").status == 200


def test_bearer_token(tel: Telemetry) -> None:
    with serve(registry=tel.registry, flow=tel.flow, token="s3cret") as srv:
        assert http_get(f"{srv.url}/healthz").status == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            for path in ("/metrics", "/api/services", "/api/flow", "/api/stats", "/nope"):
                r = http_get(f"{srv.url}{path}", headers)
                assert r.status == 401, (path, headers)
                assert r.headers["WWW-Authenticate"] == "Bearer"
        ok = {"Authorization": "Bearer s3cret"}
        for path in ("/metrics", "/api/services", "/api/flow", "/api/stats"):
            assert http_get(f"{srv.url}{path}", ok).status == 200
    with pytest.raises(ValueError):
        serve(registry=tel.registry, flow=tel.flow, token="")


def test_head_and_other_methods(server: ObservabilityServer) -> None:
    head = http_get(f"{server.url}/api/stats", method="HEAD")
    assert head.status == 200 and head.body == b""
    assert int(head.headers["Content-Length"]) > 0
    post = http_get(f"{server.url}/api/stats", method="POST")
    assert (post.status, post.headers["Allow"]) == (405, "GET, HEAD")
    assert post.json() == {"error": "method not allowed"}


def test_defaults_come_from_the_target(tel: Telemetry) -> None:
    bus = InMemoryCommBus(**tel.options)
    with serve(bus) as srv:
        assert srv.registry is tel.registry and srv.flow is tel.flow
    registry, flow = CollectorRegistry(), FlowRecorder()
    with serve(bus, registry=registry, flow=flow) as srv:
        assert srv.registry is registry and srv.flow is flow


def test_a_stalled_client_does_not_stall_the_server(tel: Telemetry) -> None:
    srv = ObservabilityServer(tel.registry, tel.flow, request_timeout=1.5, max_connections=4)
    try:
        with socket.create_connection(("127.0.0.1", srv.port)) as stalled:
            stalled.sendall(b"GET /api/stats HTTP/1.1\r\n")  # ...and never finishes
            began = time.monotonic()
            assert http_get(f"{srv.url}/healthz").status == 200
            assert time.monotonic() - began < 1.0  # not queued behind the stalled one
            stalled.settimeout(5)
            with stalled.makefile("rb") as stream:
                answer = stream.read()  # until the server lets go, after its deadline
            assert answer.startswith(b"HTTP/1.1 408 ")
    finally:
        srv.close()


def test_close_stops_listening(tel: Telemetry) -> None:
    srv = serve(registry=tel.registry, flow=tel.flow)
    port = srv.port
    srv.close()
    srv.close()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
