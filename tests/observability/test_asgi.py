"""The endpoint as an ASGI app: the same routes, JSON, errors and token rule as the
standalone server (checked side by side through real sockets, the app under a real
uvicorn), mounted under a prefix, and the mounting example of docs/endpoint.md run as a
user runs it."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.observability import FlowRecorder, serve
from jeeves_control_tower.observability.asgi import create_app

from .conftest import Telemetry
from .rawhttp import exchange, wait_for
from .support import (
    CountingHistory,
    Response,
    Stored,
    echo,
    envelope,
    http_get,
    register,
    target,
)

ROOT = Path(__file__).resolve().parents[2]
OK = {"Authorization": "Bearer s3cret"}


@contextmanager
def under_uvicorn(app: Any) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn on a free port in a thread; yield its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=20)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def carrier(kind: str, target: Any, token: str | None = None) -> Iterator[str]:
    if kind == "serve":
        with serve(target, token=token) as srv:
            yield srv.url
    else:
        with under_uvicorn(create_app(target, token=token)) as url:
            yield url


CARRIERS = pytest.mark.parametrize("kind", ["serve", "asgi"])


async def traffic(
    instrumented_bus: InMemoryCommBus, instrumented_coordinator: CommBusCoordinator
) -> None:
    instrumented_bus.subscribe("Stored", lambda e: None)
    register(instrumented_coordinator, handler=echo)
    for _ in range(3):
        await instrumented_bus.publish(Stored())
    await instrumented_coordinator.dispatch(target(), envelope())


def assert_json_error(r: Response, status: int) -> None:
    assert r.status == status
    assert r.headers["content-type"] == "application/json"
    assert isinstance(r.json()["error"], str)
    assert r.headers["cache-control"] == "no-store"


def lower(r: Response) -> Response:
    return Response(r.status, {k.lower(): v for k, v in r.headers.items()}, r.body)


@CARRIERS
async def test_same_routes_and_json(
    kind: str,
    instrumented_bus: InMemoryCommBus,
    instrumented_coordinator: CommBusCoordinator,
    tel: Telemetry,
) -> None:
    await traffic(instrumented_bus, instrumented_coordinator)
    with carrier(kind, instrumented_coordinator) as url:
        health = lower(http_get(f"{url}/healthz"))
        assert (health.status, health.json()) == (200, {"status": "ok"})
        assert health.headers["content-type"] == "application/json"
        assert health.headers["cache-control"] == "no-store"

        metrics = lower(http_get(f"{url}/metrics"))
        assert metrics.status == 200
        assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert metrics.headers["cache-control"] == "no-store"
        assert (
            'commbus_messages_total{message_type="Stored",outcome="ok",pattern="publish"} 3.0'
            in metrics.body.decode()
        )
        openmetrics = http_get(
            f"{url}/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert openmetrics.body.decode().endswith("# EOF\n")

        services = http_get(f"{url}/api/services").json()
        assert [(s["name"], s["requests"]) for s in services["services"]] == [("svc", 1)]
        assert services["services"] == tel.flow.services()
        assert http_get(f"{url}/api/flow?after=1&limit=2").json() == tel.flow.flow(1, 2)
        assert http_get(f"{url}/api/stats").json()["messages"]["publish"] == {"ok": 3}

        head = http_get(f"{url}/api/stats", method="HEAD")
        assert head.status == 200 and head.body == b""


@CARRIERS
def test_same_errors(kind: str, instrumented_coordinator: CommBusCoordinator) -> None:
    with carrier(kind, instrumented_coordinator) as url:
        assert_json_error(lower(http_get(f"{url}/nope")), 404)
        port = int(url.rsplit(":", 1)[1])
        for path in ("/metrics/", "//metrics", "/api/../metrics", "/api/./stats", "*"):
            request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            responses, _ = exchange(port, request.encode())
            assert [r.status for r in responses] == [404], path
            assert responses[0].headers["cache-control"] == "no-store"
        # both decode the path as ASGI servers do
        assert http_get(f"{url}/api%2Fstats").status == 200
        for query in ("after=-1", "limit=1001", "after=1&after=2", "x=1", "after=%C2%B2"):
            assert_json_error(lower(http_get(f"{url}/api/flow?{query}")), 400)
        for path in ("/healthz", "/metrics", "/api/stats"):
            post = lower(http_get(f"{url}{path}", method="POST"))
            assert_json_error(post, 405)
            assert post.headers["allow"] == "GET, HEAD"


@CARRIERS
def test_same_token_rule(kind: str, instrumented_coordinator: CommBusCoordinator) -> None:
    with carrier(kind, instrumented_coordinator, token="s3cret") as url:
        assert http_get(f"{url}/healthz").status == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            for path in ("/metrics", "/api/services", "/api/flow", "/api/stats", "/nope"):
                r = lower(http_get(f"{url}{path}", headers))
                assert_json_error(r, 401)
                assert r.headers["www-authenticate"] == "Bearer"
        for path in ("/metrics", "/api/services", "/api/flow", "/api/stats"):
            assert http_get(f"{url}{path}", OK).status == 200
        assert http_get(f"{url}/nope", OK).status == 404


@CARRIERS
def test_a_non_ascii_token_is_compared_as_utf8_bytes(
    kind: str, instrumented_coordinator: CommBusCoordinator
) -> None:
    with carrier(kind, instrumented_coordinator, token="päss") as url:
        port = int(url.rsplit(":", 1)[1])
        raw = b"GET /api/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        right, _ = exchange(port, raw + "Authorization: Bearer päss\r\n\r\n".encode())
        wrong, _ = exchange(port, raw + "Authorization: Bearer päss\r\n\r\n".encode("latin-1"))
        assert [r.status for r in right + wrong] == [200, 401]


def test_create_app_rejects_an_empty_token(instrumented_coordinator: CommBusCoordinator) -> None:
    with pytest.raises(ValueError):
        create_app(instrumented_coordinator, token="")


async def test_mounted_under_a_prefix_beside_the_services_own_routes(
    instrumented_bus: InMemoryCommBus, instrumented_coordinator: CommBusCoordinator, tel: Telemetry
) -> None:
    await traffic(instrumented_bus, instrumented_coordinator)

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = Starlette(
        routes=[
            Route("/", hello),
            Mount("/observability", app=create_app(instrumented_coordinator, token="s3cret")),
        ]
    )
    with TestClient(app) as client:
        assert client.get("/").text == "hello"
        assert "cache-control" not in client.get("/").headers  # only the mounted app's
        assert client.get("/observability/healthz").json() == {"status": "ok"}
        assert client.get("/observability/api/stats").status_code == 401
        stats = client.get("/observability/api/stats", headers=OK)
        assert stats.json()["messages"]["publish"] == {"ok": 3}
        assert client.get("/observability/api/flow", headers=OK).json() == tel.flow.flow()
        missing = client.get("/observability/nope", headers=OK)
        assert missing.status_code == 404
        assert missing.json() == {"error": "no route /observability/nope"}
        assert client.get("/observability/nope").status_code == 401


async def test_metrics_is_prometheus_clients_own_exposition(
    instrumented_bus: InMemoryCommBus, instrumented_coordinator: CommBusCoordinator
) -> None:
    await traffic(instrumented_bus, instrumented_coordinator)
    with TestClient(create_app(instrumented_coordinator)) as client:
        zipped = client.get("/metrics", headers={"Accept-Encoding": "gzip"})
        assert zipped.headers["content-encoding"] == "gzip"
        assert "commbus_messages_total" in zipped.text  # decoded by the client
        assert zipped.headers["cache-control"] == "no-store"
        filtered = client.get("/metrics", params={"name[]": "commbus_messages_total"}).text
        names = {line.split("{")[0] for line in filtered.splitlines() if not line.startswith("#")}
        assert names == {"commbus_messages_total"}


def _docs_example() -> str:
    text = (ROOT / "docs" / "endpoint.md").read_text()
    section = text[text.index("## Mounted: `create_app(...)`") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_docs_mounting_example_runs_under_uvicorn(tmp_path: Path) -> None:
    (tmp_path / "myservice.py").write_text(_docs_example())
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(tmp_path)])}
    command = [sys.executable, "-m", "uvicorn", "myservice:app", "--port", str(port)]
    with subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as proc:
        try:
            url = f"http://127.0.0.1:{port}"

            def up() -> bool:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                try:
                    return http_get(f"{url}/observability/healthz").status == 200
                except OSError:
                    return False

            wait_for(up, timeout=60, interval=0.2)
            assert http_get(f"{url}/").body == b"hello"
            assert http_get(f"{url}/observability/api/stats").status == 401
            stats = http_get(f"{url}/observability/api/stats", OK).json()
            assert stats["services"] == {"registered": 0, "healthy": 0}
            metrics = http_get(f"{url}/observability/metrics", OK)
            assert "commbus_services_registered" in metrics.body.decode()
        finally:
            proc.terminate()
            proc.wait(10)


@CARRIERS
def test_same_history_bounds_and_shared_computation(kind: str) -> None:
    history = CountingHistory(pause=0.3)
    telemetry = SimpleNamespace(registry=CollectorRegistry(), flow=FlowRecorder(history=history))
    with carrier(kind, SimpleNamespace(telemetry=telemetry)) as url:
        assert_json_error(lower(http_get(f"{url}/api/history?window=900&step=1")), 400)
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: http_get(f"{url}/api/history?window=900"), range(6)))
        assert [a.status for a in answers] == [200] * 6
        assert history.calls == 1
