"""The Streamlit app, driven by ``AppTest`` against real observability endpoints."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
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
    at.run()
    assert len(at.error) == 1
    message = at.error[0].value
    assert "Endpoint down" in message and str(port) in message and "retrying every" in message
    assert set(registry(at)["name"]) == SERVICES  # the last data stays on screen
    assert {m.label: m.value for m in at.metric}["Endpoints up"] == "0 / 1"
    with run_demo_in_background(config=FAST, port=port) as again:
        assert again.url == handle.url
        at.run()
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
        at.run()
        assert len(started) == 1  # one demo per process, reused across reruns
        assert not latest(at).empty
    finally:
        st.cache_resource.clear()
        for handle in started:
            handle.stop()
