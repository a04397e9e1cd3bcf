"""The probe's common-case paths (fast_report) count exactly what its general path does.

A bus with metrics and flow and tracing off reports most messages through
:func:`~jeeves_control_tower.observability.fast_report.ok_case` (a local message that
ended "ok", through ``BusProbe.ended_ok``) or
:func:`~jeeves_control_tower.observability.fast_report.common_case` (``probe.message``);
the first message of a type, a failing one and every message while a watch is due go to
``BusProbe.report``. Mixed in any order, every exposed count must match what happened."""

from __future__ import annotations

import asyncio
import math
import re
import time
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest

from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.observability import FlowRecorder

from .support import DoThing, GetState, Stored


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_mixed_outcomes_count_alike_on_both_paths() -> None:
    registry, flow = CollectorRegistry(), FlowRecorder(capacity=7)  # drained by writers too
    bus = InMemoryCommBus(registry=registry, flow=flow, tracing=False, query_timeout=0.05)
    calls = {"n": 0}

    async def send_handler(command: Any) -> None:
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            raise ValueError("every third")

    async def slow_or_quick(query: Any) -> int:
        if getattr(query, "slow", False):
            await asyncio.sleep(1)
        return 1

    bus.register_handler("DoThing", send_handler)
    bus.register_handler("GetState", slow_or_quick)
    bus.subscribe("Stored", lambda e: None)
    for _ in range(30):
        await bus.send(DoThing())
        await bus.publish(Stored())
        assert await bus.query(GetState()) == 1
    slow = GetState()
    slow.slow = True  # type: ignore[attr-defined]
    for _ in range(2):
        with pytest.raises(TimeoutError):
            await bus.query(slow)
    total = "commbus_messages_total"
    assert sample(registry, total, pattern="send", message_type="DoThing", outcome="ok") == 20
    assert sample(registry, total, pattern="send", message_type="DoThing", outcome="error") == 10
    assert sample(registry, total, pattern="publish", message_type="Stored", outcome="ok") == 30
    assert sample(registry, total, pattern="query", message_type="GetState", outcome="ok") == 30
    assert sample(registry, total, pattern="query", message_type="GetState", outcome="timeout") == 2
    count = "commbus_message_duration_seconds_count"
    assert sample(registry, count, pattern="send", message_type="DoThing") == 30
    assert sample(registry, count, pattern="query", message_type="GetState") == 32
    assert sample(registry, "commbus_timeouts_total", pattern="query", target="GetState") == 2
    errors = "commbus_handler_errors_total"
    assert (
        sample(registry, errors, pattern="send", message_type="DoThing", error_type="ValueError")
        == 10
    )
    for pattern in ("publish", "send", "query"):
        assert sample(registry, "commbus_inflight_messages", pattern=pattern) == 0
    stats = flow.stats()
    assert stats["messages"]["send"] == {"ok": 20, "error": 10}
    assert stats["messages"]["publish"] == {"ok": 30}
    assert stats["messages"]["query"] == {"ok": 30, "timeout": 2}
    assert flow.last_seq == 92


async def test_a_watch_runs_on_the_first_message_then_when_it_asks() -> None:
    bus = InMemoryCommBus(registry=CollectorRegistry(), flow=False, tracing=False)
    bus.register_handler("DoThing", lambda c: None)
    probe = bus.message_probe
    seen: list[float] = []
    answer = [math.inf]

    def watch(now: float) -> float:
        seen.append(now)
        return answer[0]

    probe.add_watch(watch)
    await bus.send(DoThing())
    await bus.send(DoThing())
    assert len(seen) == 1  # on the first message; inf: never again
    probe.add_watch(lambda now: math.inf)  # a new watch: due on the next message
    answer[0] = -math.inf  # from now on: due on every message
    await bus.send(DoThing())
    await bus.send(DoThing())
    await bus.send(DoThing())
    assert len(seen) == 4 and seen == sorted(seen)


async def test_a_raising_watch_is_reported_and_dropped_and_messages_still_count() -> None:
    registry = CollectorRegistry()
    bus = InMemoryCommBus(registry=registry, flow=False, tracing=False)
    bus.register_handler("DoThing", lambda c: None)
    calls: list[float] = []

    def broken(now: float) -> float:
        calls.append(now)
        raise RuntimeError("watch failed")

    bus.message_probe.add_watch(broken)
    for _ in range(3):
        await bus.send(DoThing())
    assert len(calls) == 1
    assert sample(registry, "commbus_telemetry_errors_total", component="probe") == 1
    total = "commbus_messages_total"
    assert sample(registry, total, pattern="send", message_type="DoThing", outcome="ok") == 3


def buckets(registry: CollectorRegistry, pattern: str, message_type: str) -> dict[str, float]:
    """``le -> cumulative count`` of one series."""
    found: dict[str, float] = {}
    for metric in registry.collect():
        for s in metric.samples:
            if (
                s.name == "commbus_message_duration_seconds_bucket"
                and s.labels.get("pattern") == pattern
                and s.labels.get("message_type") == message_type
            ):
                found[s.labels["le"]] = s.value
    return found


async def test_ok_endings_land_in_the_buckets_and_sum_of_their_durations() -> None:
    """The three paths side by side, the same durations (past the first bucket too): the
    same buckets, counts and sum for the series each of them fed."""
    registry, flow = CollectorRegistry(), FlowRecorder(capacity=3)
    bus = InMemoryCommBus(registry=registry, flow=flow, tracing=False)
    probe = bus.message_probe
    ok = probe.ended_ok("send", "local", "jeeves.commbus")
    durations = (0.00002, 0.0007, 0.003, 0.0007, 40.0)
    for message_type in ("Ok", "Common", "General"):
        for seconds in durations:
            probe.inflight["send"] = probe.inflight.get("send", 0) + 1
            started = time.perf_counter() - seconds
            if message_type == "Ok":
                ok(message_type, started, (), None)
            else:
                tell = probe.message if message_type == "Common" else probe.report
                tell("send", "local", "s", message_type, started, "ok", (), None, None, 0)
    first = buckets(registry, "send", "Ok")
    assert first["5e-05"] == 1 and first["0.001"] == 3 and first["0.005"] == 4
    assert first["30.0"] == 4 and first["+Inf"] == 5
    for message_type in ("Common", "General"):
        assert buckets(registry, "send", message_type) == first
        total = sample(registry, "commbus_messages_total", pattern="send",
                       message_type=message_type, outcome="ok")  # fmt: skip
        assert total == 5
    sums = [
        sample(registry, "commbus_message_duration_seconds_sum", pattern="send", message_type=t)
        for t in ("Ok", "Common", "General")
    ]
    assert all(sum(durations) <= s < sum(durations) + 0.05 for s in sums)
    assert probe.inflight["send"] == 0
    assert flow.stats()["messages"]["send"] == {"ok": 15}


async def test_the_ok_path_keeps_the_callers_recording_span_as_exemplar() -> None:
    """Tracing off: the exemplar and the flow record's trace id are the caller's span's."""
    registry, flow = CollectorRegistry(), FlowRecorder()
    bus = InMemoryCommBus(registry=registry, flow=flow, tracing=False)
    bus.register_handler("DoThing", lambda c: None)
    await bus.send(DoThing())  # binds the series (the general path)
    tracer = TracerProvider().get_tracer("caller")
    with tracer.start_as_current_span("caller") as span:
        await bus.send(DoThing())
    trace_id = f"{span.get_span_context().trace_id:032x}"
    text = generate_latest(registry).decode()  # type: ignore[no-untyped-call]
    found = re.findall(
        r'le="5e-05",message_type="DoThing",pattern="send"\} \S+ # \{trace_id="(\w+)"', text
    )
    assert found == [trace_id]
    records = flow.flow()["records"]
    assert [r["trace_id"] for r in records] == [None, trace_id]
