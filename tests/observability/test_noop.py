"""NoopWatch: telling OpenTelemetry's no-op tracer from an SDK by public API only."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from jeeves_control_tower.observability._noop import LocalGate, NoopWatch
from jeeves_control_tower.observability.otel_metrics import RECHECK_SECONDS

from .support import run_fresh_process


def test_injected_providers_are_judged_once() -> None:
    assert NoopWatch(trace.NoOpTracerProvider()).is_noop(0.0)
    assert not NoopWatch(TracerProvider(shutdown_on_exit=False)).is_noop(0.0)
    # settled: an SDK for good, so callers may stop asking
    assert NoopWatch(TracerProvider(shutdown_on_exit=False)).settled
    assert not NoopWatch(trace.NoOpTracerProvider()).settled


def test_the_global_placeholder_is_looked_at_again_once_per_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    looks: list[object] = []
    current: list[trace.TracerProvider] = [trace.ProxyTracerProvider()]

    def get_tracer_provider() -> trace.TracerProvider:
        looks.append(current[0])
        return current[0]

    monkeypatch.setattr(trace, "get_tracer_provider", get_tracer_provider)
    for watch in (NoopWatch(None), NoopWatch(trace.ProxyTracerProvider())):
        looks.clear()
        current[0] = trace.ProxyTracerProvider()
        assert watch.is_noop(10.0) and len(looks) == 1
        assert watch.is_noop(10.0 + RECHECK_SECONDS / 2) and len(looks) == 1
        current[0] = TracerProvider(shutdown_on_exit=False)  # set globally in between
        assert watch.is_noop(10.0 + RECHECK_SECONDS * 0.9)  # not looked at yet
        assert not watch.settled
        assert not watch.is_noop(10.0 + RECHECK_SECONDS) and len(looks) == 2
        assert watch.settled  # a real global provider is one for good
        assert not watch.is_noop(1e6) and len(looks) == 2  # a real provider stays


def test_a_global_noop_provider_stays_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "get_tracer_provider", trace.NoOpTracerProvider)
    watch = NoopWatch(None)
    assert watch.is_noop(0.0) and watch.is_noop(1e9)
    assert not watch.settled


def test_the_local_gate_shuts_only_local_messages_and_only_with_a_refresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    current: list[trace.TracerProvider] = [trace.ProxyTracerProvider()]
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: current[0])
    refreshed: list[bool] = []
    clock = [50.0]
    gate = LocalGate(NoopWatch(None), lambda: refreshed.append(True), lambda: clock[0])
    assert not gate.applies("local")  # no SDK: local messages go without the middleware
    assert gate.applies("out") and gate.applies("in")  # their context still crosses
    assert LocalGate(NoopWatch(None), None).applies("local")  # nobody would reopen it
    t = 50.0 + 10 * RECHECK_SECONDS  # past the watch's own interval
    assert gate.look(t) == t + RECHECK_SECONDS and not refreshed
    current[0] = TracerProvider(shutdown_on_exit=False)  # an SDK, set globally
    assert gate.look(t + 0.5 * RECHECK_SECONDS) == t + 1.5 * RECHECK_SECONDS
    assert not refreshed  # the watch looks at the provider at most once per interval
    assert gate.look(t + 2 * RECHECK_SECONDS) == t + 3 * RECHECK_SECONDS
    assert refreshed == [True]
    clock[0] = t + 2 * RECHECK_SECONDS
    assert gate.applies("local")  # what the bus asks when it compiles again
    gate.look(t + 4 * RECHECK_SECONDS)
    assert refreshed == [True]  # open: nothing more to do


def test_an_injected_sdk_provider_never_shuts_the_gate() -> None:
    gate = LocalGate(NoopWatch(TracerProvider(shutdown_on_exit=False)), lambda: None)
    assert gate.applies("local")


_LATE_SDK = """
import asyncio, json, time
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from jeeves_control_tower.ipc import InMemoryCommBus

class DoThing:
    pass

class Seen:
    def __init__(self):
        self.n = 0
    def before(self, ctx, message):
        self.n += 1
        return message

async def main():
    plain = InMemoryCommBus(registry=CollectorRegistry())  # the default: no SDK yet
    chained = InMemoryCommBus(registry=CollectorRegistry())
    seen = Seen()
    chained.add_middleware(seen)  # a user's middleware: the chain stays, without tracing
    for bus in (plain, chained):
        bus.register_handler("DoThing", lambda c: None)
    tracing = plain.telemetry.middlewares[0]
    gated = [tracing.applies_to("send", "local"), tracing.applies_to("send", "out")]
    for bus in (plain, chained):
        await bus.send(DoThing())
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    sent, deadline = 0, time.monotonic() + 30
    while len(exporter.get_finished_spans()) < 4 and time.monotonic() < deadline:
        for bus in (plain, chained):
            await bus.send(DoThing())
        sent += 1
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    exporter.clear()
    for bus in (plain, chained):
        await bus.send(DoThing())
    spans = [(s.name, s.parent is not None) for s in exporter.get_finished_spans()]
    print(json.dumps({"gated": gated, "sent": sent, "spans": spans, "seen": seen.n}))

asyncio.run(main())
"""


def test_local_messages_are_traced_once_an_sdk_provider_is_set_later() -> None:
    out = run_fresh_process(_LATE_SDK, unset=("OTEL_PYTHON_TRACER_PROVIDER", "OTEL_SDK_DISABLED"))
    assert out["gated"] == [False, True]  # no SDK: local messages skip the middleware
    assert out["sent"] >= 1  # picked up by a later message, within the recheck interval
    # after: each bus's send has its producer span and its handler's process span under it
    assert sorted(map(tuple, out["spans"])) == [
        ("process DoThing", True), ("process DoThing", True),
        ("send DoThing", False), ("send DoThing", False),
    ]  # fmt: skip
    assert out["seen"] == out["sent"] + 2  # the user's middleware saw every message
