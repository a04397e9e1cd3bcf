"""The local gate end to end: what a user of the default (no SDK configured) gets.

The tracing middleware leaves local messages while no SDK is configured and comes back
once a provider is set globally: the bus's probe looks at most once a second, at the end
of a message, so the message that finds the provider (and what it sends) is the last one
untraced. Setting the global provider can happen once per process, so those cases run in
a subprocess. The gate must not keep a dropped bus's probe alive either."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.observability import FlowRecorder

from .support import DoThing, run_fresh_process

_SCRIPT = """
import asyncio, json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.observability.otel_metrics import RECHECK_SECONDS

class DoThing:
    pass

async def main(case):
    bus = InMemoryCommBus(registry=CollectorRegistry(), flow=False)  # the default: no SDK
    bus.register_handler("DoThing", lambda c: None)
    if case == "probe_removed":
        bus.set_message_probe(None)  # the seam's own way to stop metrics for this bus
    await bus.send(DoThing())  # before any SDK: nothing to trace
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    await asyncio.sleep(1.5 * RECHECK_SECONDS)  # idle, well past the recheck interval
    names = []
    for _ in range(3):
        await bus.send(DoThing())
        names.append(sorted(s.name for s in exporter.get_finished_spans()))
        exporter.clear()
        await asyncio.sleep(0.6 * RECHECK_SECONDS)
    print(json.dumps(names))

asyncio.run(main(sys.argv[1]))
"""


def _run(case: str) -> Any:
    return run_fresh_process(
        _SCRIPT, case, unset=("OTEL_PYTHON_TRACER_PROVIDER", "OTEL_SDK_DISABLED")
    )


def test_after_an_sdk_is_set_on_an_idle_bus_the_message_that_finds_it_is_the_last_untraced() -> (
    None
):
    """The probe looks for the provider at the end of a message (the direct path has no
    hook at its start, by design: that is what makes it cheap), so on a bus idle since the
    provider was set, the first message is untraced, whole (no span, no orphan), and every
    later one is traced (docs/observability.md, ``tracer_provider``)."""
    assert _run("idle") == [
        [],
        ["process DoThing", "send DoThing"],
        ["process DoThing", "send DoThing"],
    ]


def test_local_tracing_comes_back_after_the_probe_is_removed() -> None:
    """With the bus's probe removed (``set_message_probe(None)``, or replaced by another
    probe), nobody would call the gate's ``look``: the middleware stays on local messages
    and checks for itself, so they are traced once an SDK is set."""
    assert _run("probe_removed")[1:] == [["process DoThing", "send DoThing"]] * 2


@pytest.mark.parametrize(
    "options",
    [
        {"flow": "plain"},  # the fast_report closure
        {"flow": "payloads"},  # the general report (the flow takes payloads)
        {"flow": "plain", "metrics": False},  # no aggregate: the general report
    ],
    ids=["fast", "payloads", "flow-only"],
)
async def test_a_dropped_bus_probe_is_freed_without_the_cycle_collector(
    options: dict[str, Any],
) -> None:
    """``probe.message`` kept on the probe must not refer back to it (a closure holding
    ``probe.report``, or ``probe.report`` itself, would make a reference cycle), so a
    dropped bus's probe (its aggregate, cells and flow writer entry) goes with the bus,
    not at the next full collection."""
    registry = CollectorRegistry()
    flow = FlowRecorder(record_payloads=options["flow"] == "payloads")
    metrics = options.get("metrics", True)
    bus = InMemoryCommBus(registry=registry, flow=flow, tracing=False, metrics=metrics)
    bus.register_handler("DoThing", lambda c: None)
    await bus.send(DoThing())
    probe = weakref.ref(bus.message_probe)
    enabled = gc.isenabled()
    gc.disable()
    try:
        del bus
        assert probe() is None
    finally:
        if enabled:
            gc.enable()
    gc.collect()  # the aggregate is retired: the count stays
    labels = {"pattern": "send", "message_type": "DoThing", "outcome": "ok"}
    expected = 1 if metrics else None
    assert registry.get_sample_value("commbus_messages_total", labels) == expected
    assert flow.stats()["messages"]["send"] == {"ok": 1}
