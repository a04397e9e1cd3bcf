"""DispatchProbe: an instrumented coordinator's metrics and flow, told once per dispatch
through the coordinator's probe seam; counts exact, failures reported, never raised."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus, RetryPolicy
from jeeves_control_tower.observability import instrument_coordinator
from jeeves_control_tower.observability.dispatch_probe import DispatchProbe
from jeeves_control_tower.types import Envelope
from tests.helpers import gated
from tests.observability.conftest import Telemetry
from tests.observability.support import envelope, register, target


def _coordinator(tel: Telemetry, **kw: Any) -> CommBusCoordinator:
    return CommBusCoordinator(
        tel.logger,
        InMemoryCommBus(instrument=False),
        registry=tel.registry,
        flow=tel.flow,
        retry_policy=RetryPolicy(initial_delay=0.0, max_delay=0.0),
        **kw,
    )


@pytest.mark.parametrize("tracing", [False, True])
async def test_counts_are_exact_over_every_outcome(tel: Telemetry, tracing: bool) -> None:
    """Metrics, flow statistics and history count what happened, with or without a tracer
    observing the same dispatches (the probe is told inside the dispatch span)."""
    coordinator = _coordinator(tel, tracing=tracing, tracer_provider=tel.provider)
    assert isinstance(coordinator.dispatch_probe, DispatchProbe)
    tries: dict[str, int] = {}

    async def handler(e: Envelope) -> Envelope:
        rid = e.request_context.request_id
        tries[rid] = tries.get(rid, 0) + 1
        if rid.startswith("flaky") and tries[rid] == 1:
            raise RuntimeError("first attempt fails")
        if rid.startswith("bad"):
            raise ValueError("always")
        return e

    register(coordinator, handler=handler)
    for i in range(7):
        await coordinator.dispatch(target(), envelope(f"ok{i}"))
    for i in range(5):
        await coordinator.dispatch(target(max_retries=1), envelope(f"flaky{i}"))
    for i in range(3):
        await coordinator.dispatch(target(max_retries=2), envelope(f"bad{i}"))
    for _ in range(2):
        await coordinator.dispatch(target("ghost"), envelope())

    run = {"service": "svc", "method": "run"}
    assert tel.sample("commbus_dispatch_total", **run, outcome="ok") == 12
    assert tel.sample("commbus_dispatch_total", **run, outcome="error") == 3
    assert tel.sample("commbus_dispatch_retries_total", **run) == 5 + 3 * 2
    assert tel.sample("commbus_dispatch_duration_seconds_count", **run) == 15
    ghost = {"service": "ghost", "method": "run", "outcome": "unknown_service"}
    assert tel.sample("commbus_dispatch_total", **ghost) == 2
    assert not tel.sample("commbus_inflight_messages", pattern="dispatch")
    stats = tel.flow.stats()
    assert stats["dispatch"] == {"ok": 12, "error": 3, "unknown_service": 2}
    assert stats["inflight"]["dispatch"] == 0
    (row,) = [r for r in tel.flow.services() if r["name"] == "svc"]
    assert (row["requests"], row["errors"], row["retries"]) == (15, 3, 11)
    history = tel.flow.history.snapshot(60, 60)["services"]["svc"]
    assert history["requests"]["total"] == 15 and history["retries"]["total"] == 11
    records = tel.flow.flow(limit=100)["records"]
    assert len(records) == 17
    if tracing:
        dispatch_spans = {s.context.trace_id for s in tel.spans() if s.name == "dispatch svc"}
        assert {int(r["trace_id"], 16) for r in records if r["targets"] == ["svc"]} == (
            dispatch_spans
        )


async def test_a_failing_metrics_part_is_reported_and_the_rest_still_counts(
    tel: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    coordinator = _coordinator(tel, tracing=False)
    probe = coordinator.dispatch_probe
    assert isinstance(probe, DispatchProbe) and probe.metrics is not None

    def broken(*args: Any) -> None:
        raise RuntimeError("metrics down")

    monkeypatch.setattr(probe.metrics, "_bind_cell", broken)
    register(coordinator, handler=lambda e: _echo(e))
    result = await coordinator.dispatch(target(), envelope())
    assert not result.terminated
    errors = tel.sample("commbus_telemetry_errors_total", component="metrics")
    assert errors == 1
    assert tel.flow.stats()["dispatch"] == {"ok": 1}
    assert probe.inflight["dispatch"] == 0 and tel.flow.stats()["inflight"]["dispatch"] == 0


async def test_load_steps_reach_the_history_while_a_dispatch_runs(tel: Telemetry) -> None:
    """The probe hands the registry's load steps to the flow's history (the gauges outside
    multiprocess mode read the live descriptor): a slot held shows now, not at the end."""
    coordinator = _coordinator(tel, tracing=False)
    gate = asyncio.Event()
    register(coordinator, handler=gated(gate), max_concurrent=3)
    running = [
        asyncio.ensure_future(coordinator.dispatch(target(), envelope(str(i)))) for i in range(2)
    ]
    await asyncio.sleep(0)
    assert tel.flow.history.snapshot(60, 60)["services"]["svc"]["load"]["peak"] == 2
    assert tel.sample("commbus_service_load", service="svc") == 2
    gate.set()
    await asyncio.gather(*running)
    await coordinator.dispatch(target(), envelope())  # one more: 1 at most, then 0
    load = tel.flow.history.snapshot(60, 60)["services"]["svc"]["load"]
    assert load["peak"] == 2 and 0 < load["avg"] < 2
    assert tel.sample("commbus_service_load", service="svc") == 0


async def test_a_failing_in_flight_gauge_never_breaks_a_dispatch_in_multiprocess_mode(
    tel: Telemetry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Multiprocess mode: the in-flight gauge (this process's file) failing to update is
    reported, never raised into the dispatch; the flow's count stays exact and the gauge
    is right again at its next update."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    coordinator = _coordinator(tel, tracing=False)
    probe = coordinator.dispatch_probe
    assert isinstance(probe, DispatchProbe) and probe.metrics is not None
    metrics = probe.metrics.metrics
    assert metrics.aggregate is None  # multiprocess mode
    real = metrics.inflight_for
    down = [True]

    class Full:
        def inc(self, amount: float = 1) -> None:
            raise OSError("No space left on device")

    def inflight_for(pattern: str) -> Any:
        return Full() if down[0] else real(pattern)

    monkeypatch.setattr(metrics, "inflight_for", inflight_for)
    gate = asyncio.Event()

    async def handler(e: Envelope) -> Envelope:
        if e.request_context.request_id == "held":
            await gate.wait()
        return e

    register(coordinator, handler=handler)
    result = await coordinator.dispatch(target(), envelope())
    assert not result.terminated
    assert tel.sample("commbus_telemetry_errors_total", component="metrics")
    assert tel.flow.stats()["dispatch"] == {"ok": 1}
    assert tel.flow.stats()["inflight"]["dispatch"] == 0
    down[0] = False
    held = asyncio.ensure_future(coordinator.dispatch(target(), envelope("held")))
    await asyncio.sleep(0)
    assert tel.sample("commbus_inflight_messages", pattern="dispatch") == 1
    gate.set()
    await held
    assert tel.sample("commbus_inflight_messages", pattern="dispatch") == 0
    assert tel.flow.stats()["dispatch"] == {"ok": 2}


async def _echo(e: Envelope) -> Envelope:
    return e


async def test_re_instrumenting_a_coordinator_counts_each_service_once(tel: Telemetry) -> None:
    coordinator = _coordinator(tel, tracing=False)
    register(coordinator, handler=_echo)
    assert tel.sample("commbus_services_registered", service_type="worker") == 1
    coordinator.telemetry.close()
    instrument_coordinator(coordinator, registry=tel.registry, flow=tel.flow, tracing=False)
    await coordinator.dispatch(target(), envelope())
    assert tel.sample("commbus_services_registered", service_type="worker") == 1
    coordinator.unregister_service("svc")
    assert tel.sample("commbus_services_registered", service_type="worker") == 0
