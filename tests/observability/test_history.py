"""Server-side history: exact time-weighted gauges, per-second counters, bounds, and the
``/api/history`` route fed by a real coordinator."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.observability import FlowRecorder, serve
from jeeves_control_tower.observability.history import History, history_body

from .conftest import Telemetry
from .support import Stored, echo, envelope, http_get, register, target


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


T0 = 1_000_000.0


def test_gauge_average_and_peak_are_time_weighted() -> None:
    clock = Clock(T0)
    h = History(horizon=60, clock=clock)
    h.service_state("billing", load=0, queue_depth=0, capacity=2)
    clock.now = T0 + 10.0
    h.service_state("billing", load=2, queue_depth=6, capacity=2)  # busy for 0.5 s
    clock.now = T0 + 10.5
    h.service_state("billing", load=2, queue_depth=0, capacity=2)
    clock.now = T0 + 11.0
    h.service_state("billing", load=0, queue_depth=0, capacity=2)
    clock.now = T0 + 20.0
    snap = h.snapshot(60, 5)
    svc = snap["services"]["billing"]
    # 20 s covered; load 2 for 1 s, queue 6 for 0.5 s: an instant snapshot now reads 0.
    assert snap["since"] == T0 and svc["capacity"] == 2
    assert svc["load"]["avg"] == pytest.approx(2 * 1.0 / 20) and svc["load"]["peak"] == 2
    assert svc["queue"]["avg"] == pytest.approx(6 * 0.5 / 20) and svc["queue"]["peak"] == 6
    assert snap["buckets"] == [T0, T0 + 5, T0 + 10, T0 + 15]
    assert svc["queue"]["avgs"] == [0.0, 0.0, pytest.approx(0.6), 0.0]
    assert svc["queue"]["peaks"] == [0.0, 0.0, 6.0, 0.0]


def test_counters_are_summed_per_bucket_and_windowed() -> None:
    clock = Clock(T0)
    h = History(horizon=30, clock=clock)
    for second, outcome in ((1, "ok"), (2, "error"), (2, "timeout"), (7, "ok")):
        clock.now = T0 + second + 0.25
        h.dispatch("svc", outcome, retries=1, seconds=0.01)
    clock.now = T0 + 3.5
    h.handler_run("pkg.Audit.on_event", failed=False, seconds=0.002)
    h.handler_run("pkg.Audit.on_event", failed=True, seconds=0.004)
    clock.now = T0 + 10.0
    snap = h.snapshot(10, 5)
    svc = snap["services"]["svc"]
    assert svc["requests"] == {"total": 4.0, "buckets": [3.0, 1.0]}
    assert svc["errors"]["total"] == 1 and svc["timeouts"]["total"] == 1
    assert svc["retries"]["buckets"] == [3.0, 1.0]
    audit = snap["handlers"]["pkg.Audit.on_event"]
    assert audit["events"]["total"] == 2 and audit["errors"]["total"] == 1
    assert audit["seconds"]["total"] == pytest.approx(0.006)
    clock.now = T0 + 16.0  # nothing happened in the last 5 s
    later = h.snapshot(5, 5)
    assert later["since"] == T0 + 11 and later["services"]["svc"]["requests"]["total"] == 0


def test_bounds() -> None:
    clock = Clock(T0)
    h = History(horizon=5, max_series=2, clock=clock)
    for name in ("a", "b", "c"):
        h.service_state(name, 1, 0, 1)
        h.dispatch(name, "ok", 0, 0.1)
        h.handler_run(name, False, 0.1)
    for second in range(100):  # the ring keeps ``horizon`` stored seconds per series
        clock.now = T0 + second
        h.dispatch("a", "ok", 0, 0.0)
    snap = h.snapshot(5, 1)
    assert set(snap["services"]) == {"a", "b"} and set(snap["handlers"]) == {"a", "b"}
    assert len(h._services["a"].buckets) == 5
    with pytest.raises(ValueError):
        h.snapshot(6, 1)
    with pytest.raises(ValueError):
        h.snapshot(5, 0)


@pytest.mark.parametrize("query", ["window=0", "window=901", "step=x", "step=1&step=2", "a=1"])
def test_bad_parameters(query: str) -> None:
    with pytest.raises(ValueError):
        history_body(History(), query)


async def test_route_shows_the_recorded_past() -> None:
    flow = FlowRecorder(handler_runs=True)
    registry = CollectorRegistry()
    bus = InMemoryCommBus(flow=flow, registry=registry)
    coordinator = CommBusCoordinator(None, bus, flow=flow, registry=registry)

    def fails(event: object) -> None:
        raise RuntimeError("boom")

    bus.subscribe("Stored", lambda e: None)
    bus.subscribe("Stored", fails)
    register(coordinator, handler=echo)
    await bus.publish(Stored())
    await coordinator.dispatch(target(), envelope())
    with serve(coordinator) as srv:
        r = http_get(f"{srv.url}/api/history?window=60&step=1")
        assert r.status == 200
        body = r.json()
        assert body["services"]["svc"]["requests"]["total"] == 1
        assert body["services"]["svc"]["load"]["peak"] == 1
        runs = {name.rsplit(".", 1)[-1]: h for name, h in body["handlers"].items()}
        assert runs["<lambda>"]["events"]["total"] == 1
        assert runs["<lambda>"]["errors"]["total"] == 0  # the other subscriber failed
        assert runs["fails"]["errors"]["total"] == 1
        bad = http_get(f"{srv.url}/api/history?window=0")
        assert bad.status == 400 and "window" in bad.json()["error"]
    coordinator.telemetry.close()
    bus.telemetry.close()


async def test_handler_runs_are_off_by_default(
    instrumented_bus: InMemoryCommBus, instrumented_coordinator: CommBusCoordinator, tel: Telemetry
) -> None:
    instrumented_bus.subscribe("Stored", lambda e: None)
    register(instrumented_coordinator, handler=echo)
    await instrumented_bus.publish(Stored())
    await instrumented_coordinator.dispatch(target(), envelope())
    snap = tel.flow.history.snapshot(60, 1)
    assert snap["handlers"] == {} and snap["services"]["svc"]["requests"]["total"] == 1
