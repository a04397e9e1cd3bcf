"""Server-side history: exact time-weighted gauges, per-second counters, bounds, and the
``/api/history`` route fed by a real coordinator."""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.observability import FlowRecorder, serve
from jeeves_control_tower.observability.history import MAX_BUCKETS, History, history_body
from tests.helpers import traced_memory

from .conftest import Telemetry
from .support import CountingHistory, Stored, echo, envelope, http_get, register, target


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
    for second in range(100):
        clock.now = T0 + second
        h.dispatch("a", "ok", 0, 0.0)
    snap = h.snapshot(5, 1)
    assert set(snap["services"]) == {"a", "b"} and set(snap["handlers"]) == {"a", "b"}
    # The rings keep ``horizon`` stored seconds per series: 2,000 more seconds of
    # dispatches and load steps retain nothing (unbounded, each stored second of the
    # counter and of the gauge would hold a bucket).
    gc.collect()
    with traced_memory() as memory:
        for second in range(100, 2100):
            clock.now = T0 + second
            h.dispatch("a", "ok", 0, 0.0)
            h.service_load("a", second & 1)
        h.drain()  # what waits in the hand-off (fewer than 128 changes) is not kept
        gc.collect()  # empties the free lists: what they hold is not the history's
        retained, peak = memory.read()
    assert retained < 20_000, f"{retained} bytes retained by 2,000 stored seconds"
    assert peak < 200_000, f"{peak} bytes at the peak"  # 4,000 changes waiting: ~1 MB
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


def _filled(history: History, clock: Clock, services: int, seconds: int) -> History:
    for second in range(seconds):
        clock.now = T0 + second
        for i in range(services):
            history.service_state(f"svc{i}", second % 3, second % 2, 4)
            history.dispatch(f"svc{i}", "ok", 0, 0.01)
            history.handler_run(f"h{i}", False, 0.01)
    clock.now = T0 + seconds
    return history


def test_an_answer_holds_at_most_max_buckets_per_series() -> None:
    clock = Clock(T0)
    history = _filled(History(clock=clock), clock, services=4, seconds=900)
    with serve(registry=CollectorRegistry(), flow=FlowRecorder(history=history)) as srv:
        for query in ("window=900&step=1", "window=900&step=2", "window=301&step=1"):
            refused = http_get(f"{srv.url}/api/history?{query}")
            assert refused.status == 400 and str(MAX_BUCKETS) in refused.json()["error"]
        for query in ("window=900&step=3", "window=300&step=1", "window=900&step=5"):
            body = http_get(f"{srv.url}/api/history?{query}").json()
            assert len(body["buckets"]) <= MAX_BUCKETS + 1  # +1: the grid is step-aligned
            entry = body["services"]["svc0"]
            assert len(entry["load"]["avgs"]) == len(entry["requests"]["buckets"])
            assert len(entry["requests"]["buckets"]) == len(body["buckets"])
        # built piece by piece, the answer is byte for byte the snapshot's compact JSON
        answer = http_get(f"{srv.url}/api/history?window=60&step=2").body
        assert answer == json.dumps(history.snapshot(60, 2), separators=(",", ":")).encode()


def test_concurrent_requests_for_one_history_cost_one_computation() -> None:
    history = CountingHistory(pause=0.3)
    with serve(registry=CollectorRegistry(), flow=FlowRecorder(history=history)) as srv:
        url = f"{srv.url}/api/history?window=600&step=2"
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: http_get(url), range(8)))
        assert [a.status for a in answers] == [200] * 8
        assert len({a.body for a in answers}) == 1  # one computation, shared
        assert history.calls == 1
        # the same parameters spelled differently are the same answer
        assert http_get(f"{srv.url}/api/history?step=2&window=0600").body == answers[0].body
        assert history.calls == 1


def test_heavy_computations_run_one_at_a_time_and_excess_is_told_to_retry() -> None:
    history = CountingHistory(pause=0.6)
    with serve(registry=CollectorRegistry(), flow=FlowRecorder(history=history)) as srv:
        urls = [f"{srv.url}/api/history?window=600&step={step}" for step in range(2, 10)]
        with ThreadPoolExecutor(len(urls)) as pool:
            answers = list(pool.map(http_get, urls))
        assert history.most == 1  # never two at once, whatever the parameters
        busy = [a for a in answers if a.status == 503]
        assert busy and all(a.status == 200 for a in answers if a not in busy)
        assert history.calls == len(urls) - len(busy)
        for answer in busy:
            assert answer.headers["Retry-After"] == "1"
            assert answer.headers["Cache-Control"] == "no-store"
            assert "busy" in answer.json()["error"]
        assert http_get(f"{srv.url}/healthz").status == 200


def test_a_connection_computing_history_does_not_hold_the_last_slot() -> None:
    history = CountingHistory(pause=2.0)
    flow = FlowRecorder(history=history)
    with serve(registry=CollectorRegistry(), flow=flow, max_connections=1) as srv:
        outcome: list[object] = []

        def fetch() -> None:
            try:
                outcome.append(http_get(f"{srv.url}/api/history").status)
            except OSError as exc:  # shed: closed without an answer
                outcome.append(exc)

        heavy = threading.Thread(target=fetch, daemon=True)
        heavy.start()
        deadline = time.monotonic() + 10
        while history.running == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        began = time.monotonic()
        assert http_get(f"{srv.url}/healthz").status == 200  # the history one was shed
        assert time.monotonic() - began < 1.0 and srv.shed_connections == 1
        heavy.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], OSError)
        while history.running:  # its computation ends (and frees the slot) all the same
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_a_change_handed_off_while_a_snapshot_is_read_never_lifts_the_average_above_the_peak() -> (
    None
):
    """A writer on another thread records a change between the reader's start and its
    drain: the snapshot must not integrate load past its own end."""
    times = [T0 + 100.0]
    writer: list[Callable[[], None]] = []

    def clock() -> float:
        if writer:  # the reader's clock call: a writer hands a change off meanwhile
            record = writer.pop()
            now = times[0]
            times[0] = T0 + 100.9
            record()
            return now
        return times[0]

    h = History(horizon=60, clock=clock)
    h.service_state("s", 4, 0, 10)  # load 4 from T0 + 100
    times[0] = T0 + 100.5
    writer.append(lambda: h.service_state("s", 0, 0, 10))  # back to 0 at T0 + 100.9
    load = h.snapshot(1, 1)["services"]["s"]["load"]
    assert load["avg"] <= load["peak"] == 4.0
