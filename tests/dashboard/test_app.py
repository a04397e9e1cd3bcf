"""The Streamlit app, driven by ``AppTest`` against real observability endpoints."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from prometheus_client import CollectorRegistry
from streamlit.testing.v1 import AppTest

import jeeves_control_tower.demo as demo_pkg
from jeeves_control_tower.demo import DemoHandle, run_demo_in_background
from jeeves_control_tower.ipc import CommBusCoordinator, DynamicEvent, InMemoryCommBus
from jeeves_control_tower.observability import FlowRecorder, serve
from jeeves_control_tower.types import ServiceDescriptor

from ..demo.helpers import FAST, wait_for_traffic

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
SERVICES = {
    "flow_service", "planner", "embedder", "summarizer", "indexer",
    "memory", "billing", "notifications", "audit",
}  # fmt: skip


def make_app(monkeypatch: pytest.MonkeyPatch, endpoints: str | None) -> AppTest:
    if endpoints is None:
        monkeypatch.delenv("JEEVES_ENDPOINTS", raising=False)
    else:
        monkeypatch.setenv("JEEVES_ENDPOINTS", endpoints)
    monkeypatch.delenv("JEEVES_TOKEN", raising=False)
    return AppTest.from_file(APP, default_timeout=30)


def _table_with(at: AppTest, column: str) -> Any:
    found = [df.value for df in at.dataframe if column in df.value.columns]
    assert len(found) == 1, f"{len(found)} tables with a {column!r} column"
    return found[0]


def registry(at: AppTest) -> Any:
    """The service registry table (the one with a load column)."""
    return _table_with(at, "slots")


def latest(at: AppTest) -> Any:
    """The latest-messages table."""
    return _table_with(at, "trace_id")


def graph_spec(at: AppTest) -> str:
    charts = at.get("graphviz_chart")
    assert len(charts) == 1
    return str(charts[0].proto.spec)


def texts(elements: Any) -> list[str]:
    return [str(e.value) for e in elements]


def rerun_until(at: AppTest, check: Any, timeout: float = 30.0) -> AppTest:
    """Rerun until ``check(at)`` holds: endpoints are polled at most once per refresh
    interval for the whole server, so a rerun right after a poll reads the same data."""
    deadline = time.monotonic() + timeout
    while True:
        at.run()
        if check(at) or time.monotonic() > deadline:
            return at
        time.sleep(0.3)


def test_registry_and_flow_render_from_a_real_endpoint(
    monkeypatch: pytest.MonkeyPatch, live_demo: DemoHandle
) -> None:
    at = make_app(monkeypatch, live_demo.url).run()
    assert not at.exception, at.exception
    assert not at.error
    assert at.title[0].value == "Jeeves Control Tower"
    assert [s.value for s in at.subheader if s.value != "Filters"] == [
        "Service registry",
        "Live message flow",
    ]
    table = registry(at)
    assert set(table["name"]) == SERVICES
    assert set(table["type"]) == {"flow", "worker", "vertical"}
    row = table.set_index("name").loc["billing"]
    assert row["slots"].endswith("/ 2") and 0 <= row["load_pct"] <= 100
    assert row["version"] == "1.0.3" and list(row["capabilities"]) == ["charge", "quota", "usage"]
    assert table["requests"].sum() > 0 and table["retries"].sum() > 0
    messages = latest(at)
    assert set(messages["pattern"]) == {"publish", "send", "query", "dispatch"}
    assert messages["trace_id"].str.fullmatch(r"[0-9a-f]{32}").all()
    assert {"Indexer.on_memory_stored", "Audit.on_event"} <= {
        t for cell in messages["target"] for t in cell.split(", ")
    }
    spec = graph_spec(at)
    assert '"dispatch:execute_pipeline" -> "to:flow_service"' in spec
    assert '"publish:MemoryStored" -> "to:Indexer.on_memory_stored"' in spec
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Endpoints up"] == "1 / 1"
    assert metrics["Healthy services"].endswith("/ 9")
    assert float(metrics["Messages / s"]) > 0
    assert re.fullmatch(r"\d+\.\d / \d+", metrics["Queued avg / peak"])
    # Subscriber-only services show the events their handlers ran, with latency.
    rows = table.set_index("name")
    for name in ("audit", "notifications"):
        assert rows.loc[name, "events"] > 0 and rows.loc[name, "avg_latency_ms"] > 0, name
    # The page says which span the rates cover.
    captions = texts(at.caption)
    assert any("Rates, shares and charts over" in c and "UTC" in c for c in captions)
    assert any("from the endpoint's own history" in c for c in captions)


def test_charts_render_with_24_hour_utc_axes(
    monkeypatch: pytest.MonkeyPatch, live_demo: DemoHandle
) -> None:
    at = make_app(monkeypatch, live_demo.url)
    rerun_until(at, lambda a: len(a.get("vega_lite_chart")) == 3, timeout=60)
    assert not at.exception, at.exception
    charts = at.get("vega_lite_chart")
    assert len(charts) == 3
    for chart in charts:
        spec = json.loads(chart.proto.spec)
        x = spec["encoding"]["x"]
        assert x["axis"]["format"] == "%H:%M:%S" and x["scale"]["type"] == "utc"


def test_headline_rate_and_graph_agree(
    monkeypatch: pytest.MonkeyPatch, live_demo: DemoHandle
) -> None:
    at = make_app(monkeypatch, live_demo.url).run()
    at.sidebar.multiselect(key="patterns").set_value(["dispatch"]).run()
    tile = float({m.label: m.value for m in at.metric}["Messages / s"])
    labels = [float(x) for x in re.findall(r'label="([0-9.]+)/s', graph_spec(at))]
    assert labels and sum(labels) == pytest.approx(tile, abs=0.05 * len(labels) + 0.01)


def test_trace_ids_link_to_the_trace_ui(
    monkeypatch: pytest.MonkeyPatch, live_demo: DemoHandle
) -> None:
    monkeypatch.setenv("JEEVES_TRACE_URL", "http://traces.example:16686/trace/{trace_id}")
    at = make_app(monkeypatch, live_demo.url).run()
    links = latest(at)["trace_id"]
    assert links.str.fullmatch(r"http://traces\.example:16686/trace/[0-9a-f]{32}").all()


def test_filters_survive_refreshes(monkeypatch: pytest.MonkeyPatch, live_demo: DemoHandle) -> None:
    at = make_app(monkeypatch, live_demo.url).run()
    at.sidebar.multiselect(key="types").set_value(["worker"]).run()
    assert set(registry(at)["type"]) == {"worker"}
    at.sidebar.multiselect(key="patterns").set_value(["dispatch"]).run()
    for _ in range(2):  # further refreshes keep the filters
        at.run()
        assert set(registry(at)["name"]) == {"embedder", "summarizer", "indexer"}
        assert set(latest(at)["pattern"]) == {"dispatch"}
        assert at.sidebar.multiselect(key="types").value == ["worker"]
    at.sidebar.segmented_control(key="health").set_value("unhealthy").run()
    shown = registry(at)
    assert shown.empty or set(shown["health"]) == {"● unhealthy"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_endpoint_down_then_recovered(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _free_port()
    handle = run_demo_in_background(config=FAST, port=port)
    try:
        wait_for_traffic(handle.url)
        at = make_app(monkeypatch, handle.url).run()
        assert not at.error and set(registry(at)["name"]) == SERVICES
    finally:
        handle.stop()
    rerun_until(at, lambda a: len(a.error) == 1)
    assert len(at.error) == 1
    message = at.error[0].value
    assert "Endpoint down" in message and str(port) in message and "retrying every" in message
    assert set(registry(at)["name"]) == SERVICES  # the last data stays on screen
    assert {m.label: m.value for m in at.metric}["Endpoints up"] == "0 / 1"
    with run_demo_in_background(config=FAST, port=port) as again:
        assert again.url == handle.url
        rerun_until(at, lambda a: not a.error)
        assert not at.error
        assert any("Reconnected" in s for s in texts(at.success))
        assert set(registry(at)["name"]) == SERVICES
        assert {m.label: m.value for m in at.metric}["Endpoints up"] == "1 / 1"


def test_sidebar_endpoints_override_env_and_reject_junk(
    monkeypatch: pytest.MonkeyPatch, live_demo: DemoHandle
) -> None:
    at = make_app(monkeypatch, "http://127.0.0.1:9").run()
    assert at.error  # nothing listens on port 9
    bare = live_demo.url.removeprefix("http://")
    at.sidebar.text_area(key="endpoints_text").set_value(f"{bare}, javascript:alert(1)").run()
    assert not at.error
    assert any("Ignored" in w for w in texts(at.sidebar.warning))
    assert set(registry(at)["name"]) == SERVICES


def test_two_endpoints_are_merged(monkeypatch: pytest.MonkeyPatch, live_demo: DemoHandle) -> None:
    with run_demo_in_background(config=FAST) as other:
        wait_for_traffic(other.url)
        at = make_app(monkeypatch, f"{live_demo.url},{other.url}").run()
        table = registry(at)
        assert len(table) == 18 and set(table["endpoint"]) == {live_demo.url, other.url}
        assert {m.label: m.value for m in at.metric}["Endpoints up"] == "2 / 2"


@pytest.fixture
def hostile_endpoint() -> Iterator[str]:
    """A real endpoint whose registry and flow hold markup and DOT-breaking names."""
    flow = FlowRecorder()
    registry = CollectorRegistry()
    bus = InMemoryCommBus(flow=flow, registry=registry)
    coordinator = CommBusCoordinator(None, bus, flow=flow, registry=registry)
    coordinator.register_service(
        ServiceDescriptor("<img src=x onerror=alert(1)>", "worker", capabilities=["**b**"])
    )
    server = serve(coordinator)
    try:
        bus.subscribe('x"]; evil [label="', lambda e: None)
        asyncio.run(bus.publish(DynamicEvent('x"]; evil [label="', {})))
        yield server.url
    finally:
        server.close()
        coordinator.telemetry.close()
        bus.telemetry.close()


def test_untrusted_names_are_shown_as_text(
    monkeypatch: pytest.MonkeyPatch, hostile_endpoint: str
) -> None:
    at = make_app(monkeypatch, hostile_endpoint).run()
    assert not at.exception and not at.error
    assert list(registry(at)["name"]) == ["<img src=x onerror=alert(1)>"]
    assert list(registry(at)["capabilities"].iloc[0]) == ["**b**"]
    assert list(latest(at)["type"]) == ['x"]; evil [label="']
    spec = graph_spec(at)
    assert '"publish:x\\"]; evil [label=\\""' in spec
    for line in spec.splitlines():  # quotes stay balanced on every line
        assert line.replace("\\\\", "").replace('\\"', "").count('"') % 2 == 0


def test_demo_runs_in_process_without_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[DemoHandle] = []

    def start(**kw: Any) -> DemoHandle:
        handle = run_demo_in_background(**kw)
        started.append(handle)
        return handle

    monkeypatch.setattr(demo_pkg, "run_demo_in_background", start)
    st.cache_resource.clear()
    try:
        at = make_app(monkeypatch, None).run()
        assert len(started) == 1
        assert any("demo running in this process" in i for i in texts(at.sidebar.info))
        assert set(registry(at)["name"]) == SERVICES
        wait_for_traffic(started[0].url)
        rerun_until(at, lambda a: not latest(a).empty)
        assert len(started) == 1  # one demo per process, reused across reruns
        assert not latest(at).empty
    finally:
        st.cache_resource.clear()
        for handle in started:
            handle.stop()


@pytest.fixture
def counting_endpoint() -> Iterator[tuple[str, dict[str, int]]]:
    """A fake endpoint that counts the requests to each path."""
    hits: dict[str, int] = {}
    lock = threading.Lock()
    bodies = {
        "/api/services": {"generated_at": time.time(), "services": []},
        "/api/stats": {"uptime_seconds": 1.0, "flow": {"last_seq": 0}},
        "/api/flow": {"last_seq": 0, "records": []},
        "/api/history": {"generated_at": time.time(), "buckets": [], "services": {}},
        "/api/peers": {"process": None, "endpoint": None, "ttl_seconds": None, "peers": []},
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            with lock:
                hits[path] = hits.get(path, 0) + 1
            data = json.dumps(bodies.get(path, {})).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_sessions_share_one_poll_per_refresh_interval(
    monkeypatch: pytest.MonkeyPatch, counting_endpoint: tuple[str, dict[str, int]]
) -> None:
    url, hits = counting_endpoint
    viewers = [make_app(monkeypatch, url) for _ in range(3)]
    for at in viewers:  # three sessions, each asking for a 10 s refresh
        at.session_state["refresh"] = 10
        at.run()
        assert not at.exception, at.exception
    for at in viewers:
        at.run()
    assert hits["/api/services"] == 1 and hits["/api/history"] == 1
    assert hits["/api/flow"] == 1 and hits["/api/peers"] == 1  # fleet discovery too
    # Once the interval has passed, the next viewer's rerun polls again, once.
    deadline = time.monotonic() + 30
    while hits["/api/services"] < 2 and time.monotonic() < deadline:
        time.sleep(1)
        for at in viewers:
            at.run()
    assert hits["/api/services"] == 2
