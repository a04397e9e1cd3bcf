"""One worker of a pre-fork server, for tests/observability/test_prefork.py.

Run as ``python -m tests.observability.prefork_worker INDEX READY_FILE [--serve]`` with
``PROMETHEUS_MULTIPROC_DIR`` set. It records a known amount of everything (see
:func:`expected`), optionally serves the observability endpoint, writes ``READY_FILE``
(the endpoint's port, or 0) and stays alive until its stdin is closed.
"""

from __future__ import annotations

import asyncio
import os
import sys

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus, RetryPolicy
from jeeves_control_tower.ipc.adapters.metrics import SENT, AdapterMetrics
from jeeves_control_tower.observability import FlowRecorder, get_metrics
from jeeves_control_tower.observability.server import serve
from jeeves_control_tower.types import Envelope
from tests.observability.support import DoThing, Stored, envelope, register, target

#: Dispatch durations each worker observes (binary fractions: their sums are exact).
DURATIONS = (0.25, 0.5, 2.0, 0.125)


def publishes(index: int) -> int:
    return 10 * (index + 1)


def sends(index: int) -> int:
    return index + 1


def held_inflight(index: int) -> int:
    return index + 1


def ledger_posts(index: int) -> int:
    """Dispatches to ``ledger`` each worker completes, each after one retry (and one more
    stays in flight, holding a slot, until the worker exits)."""
    return index + 2


def buffered(index: int) -> int:
    return 2 * index + 3


def dead_letter_depth(index: int) -> int:
    return 100 + index


def healthy(index: int) -> int:
    return 0 if index == 1 else 1


async def _traffic(bus: InMemoryCommBus, index: int) -> None:
    bus.subscribe("Stored", lambda e: None)
    bus.register_handler("DoThing", lambda c: None)
    for _ in range(publishes(index)):
        await bus.publish(Stored())
    for _ in range(sends(index)):
        await bus.send(DoThing())


async def _dispatches(coordinator: CommBusCoordinator, index: int) -> asyncio.Task[Envelope]:
    """``ledger_posts(index)`` dispatches done, one retry each; the task of one held."""
    failed: set[str] = set()
    hold = asyncio.Event()

    async def post(e: Envelope) -> Envelope:
        rid = e.request_context.request_id
        if rid == "held":
            await hold.wait()
        elif rid not in failed:
            failed.add(rid)
            raise RuntimeError("first attempt fails")
        return e

    register(coordinator, "ledger", handler=post, max_concurrent=4)
    for i in range(ledger_posts(index)):
        await coordinator.dispatch(target("ledger", method="post", max_retries=1), envelope(str(i)))
    held = asyncio.ensure_future(
        coordinator.dispatch(target("ledger", method="post"), envelope("held"))
    )
    await asyncio.sleep(0)
    return held


async def _run(index: int, ready_file: str, serve_endpoint: bool) -> None:
    registry = CollectorRegistry()
    flow = FlowRecorder()
    # A recording provider: the bus's histogram observations carry trace-id exemplars.
    provider = TracerProvider()
    bus = InMemoryCommBus(registry=registry, flow=flow, tracer_provider=provider)
    await _traffic(bus, index)
    coordinator = CommBusCoordinator(
        None, bus, retry_policy=RetryPolicy(initial_delay=0.0, max_delay=0.0)
    )
    held = await _dispatches(coordinator, index)
    metrics = get_metrics(registry)
    series = metrics.dispatch_series("billing", "charge")
    for duration in DURATIONS:
        series.duration.observe(duration)
    # Exemplars are not kept in multiprocess mode: observing with one must still work.
    series.duration.observe(1.0, {"trace_id": format(index + 1, "032x")})
    metrics.inflight_for("query").inc(held_inflight(index))
    metrics.service_capacity.labels("billing").set(4)
    metrics.service_healthy.labels("billing").set(healthy(index))
    adapter = AdapterMetrics("redis", registry)
    adapter.buffered(buffered(index))
    adapter.dead_letter_depth("jeeves:dlq", dead_letter_depth(index))
    adapter.wire(SENT, "publish", publishes(index))
    port = 0
    server = None
    if serve_endpoint:
        server = serve(registry=registry, flow=flow)
        port = server.port
    _ready(ready_file, port)
    # until the test closes our stdin (the loop runs on: the held dispatch stays in flight)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    held.cancel()
    if server is not None:
        server.close()


def _ready(ready_file: str, port: int) -> None:
    tmp = ready_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.replace(tmp, ready_file)


def main(index: int, ready_file: str, serve_endpoint: bool) -> None:
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    asyncio.run(_run(index, ready_file, serve_endpoint))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], "--serve" in sys.argv[3:])
