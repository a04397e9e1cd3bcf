"""Another language on the bus: a Node.js process (``@grpc/grpc-js`` + ``@grpc/proto-loader``,
``client.js``) joins the hub through ``commbus.proto`` alone. It receives events published
from Python, answers a query and serves a dispatch from the hub's coordinator, with the
trace id of the Python caller; and it publishes and queries into Python under its own trace.

Needs ``node`` (outside CI the test is skipped without it, in CI it fails) and ``npm ci``
run here (``scripts/setup`` does it; without it the test fails, saying so)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import (
    CommBusCoordinator,
    DynamicEvent,
    DynamicQuery,
    InMemoryCommBus,
)
from jeeves_control_tower.ipc.adapters.grpc import PROTO, serve_grpc
from jeeves_control_tower.testing import eventually
from jeeves_control_tower.types import (
    DispatchTarget,
    Envelope,
    RequestContext,
    SchedulingPriority,
)
from tests.helpers import unavailable

HERE = Path(__file__).resolve().parent
NODE_TRACE = int("4bf92f3577b34da6a3ce929d0e0e4736", 16)


def node_ready() -> str:
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed")
    if not (HERE / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("tests/node_client/node_modules is missing: run `npm ci` there (scripts/setup)")
    return node


async def test_a_node_process_joins_the_bus_through_the_hub() -> None:
    node = node_ready()
    provider = TracerProvider()
    tracer = provider.get_tracer("node-test")
    # The hub's bus and coordinator are instrumented: their telemetry injects the trace
    # context into what goes out and continues the one that comes in (the transports
    # only carry the headers).
    registry = CollectorRegistry()
    bus = InMemoryCommBus(query_timeout=10.0, tracer_provider=provider, registry=registry)
    coordinator = CommBusCoordinator(None, bus, tracer_provider=provider, registry=registry)
    hub = await serve_grpc(coordinator, port=0, metrics=False, heartbeat_interval=0.5)
    proc = await asyncio.create_subprocess_exec(
        node, str(HERE / "client.js"), hub.address, str(PROTO),
        stdout=asyncio.subprocess.PIPE, cwd=HERE,
    )  # fmt: skip
    lines: list[dict[str, Any]] = []

    async def read() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            lines.append(json.loads(raw))

    reader = asyncio.get_running_loop().create_task(read())

    def seen(event: str) -> list[dict[str, Any]]:
        return [line for line in lines if line["event"] == event]

    try:
        await eventually(lambda: bool(seen("ready")) or proc.returncode is not None, 30.0)
        assert seen("ready"), lines
        await eventually(lambda: hub.coordinator.get_service("node.svc") is not None)
        await hub.local.sync()

        # Python -> Node: an event, a query, a dispatch, each under a Python trace
        with tracer.start_as_current_span("python-caller") as span:
            python_trace = f"{span.get_span_context().trace_id:032x}"
            await bus.publish(DynamicEvent("node.ping", {"n": 1}))
            assert await bus.query(DynamicQuery("node.add", {"a": 2, "b": 3})) == 5
            target = DispatchTarget(
                service_name="node.svc",
                method="run",
                priority=SchedulingPriority.HIGH,
                timeout_seconds=10.0,
            )
            context = RequestContext(request_id="r-node", capability="test")
            result = await hub.coordinator.dispatch(target, Envelope(context))
        assert not result.terminated, result.termination_reason
        assert result.outputs["node"] == "served by node"
        await eventually(lambda: bool(seen("event")))
        assert seen("event")[0]["payload"] == {"n": 1}
        assert seen("event")[0]["trace_id"] == python_trace
        assert seen("query")[0]["trace_id"] == python_trace
        assert seen("dispatch")[0]["trace_id"] == python_trace

        # Node -> Python: its event and its query arrive under the trace Node started
        hellos: list[tuple[Any, int]] = []
        echoes: list[int] = []

        def on_hello(event: DynamicEvent) -> None:
            hellos.append((event.payload, trace.get_current_span().get_span_context().trace_id))

        def echo(query: DynamicQuery) -> str:
            echoes.append(trace.get_current_span().get_span_context().trace_id)
            return f"python heard: {query.payload['text']}"

        bus.subscribe("node.hello", on_hello)
        bus.register_handler("py.echo", echo)
        await hub.local.sync()
        await bus.publish(DynamicEvent("node.go", {}))
        await eventually(lambda: bool(seen("reply")), 10.0)
        reply = seen("reply")[0]
        assert reply["status"] == "OK", reply
        assert reply["reply"]["result"] == "python heard: hi from node"
        assert echoes == [NODE_TRACE]
        await eventually(lambda: bool(hellos))
        assert hellos == [({"from": "node"}, NODE_TRACE)]
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await hub.close(grace=0)
        provider.shutdown()
