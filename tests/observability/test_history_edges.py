"""The history's edges: services past ``max_series``, a wall clock that steps back, a
registration replaced before its records were drained, a window as long as the horizon.

Each test states the public behaviour that must hold."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.observability import FlowRecorder
from jeeves_control_tower.observability.history import History
from jeeves_control_tower.observability.history_series import CounterSeries
from jeeves_control_tower.types import Envelope

from .support import envelope, register, target


async def test_a_service_past_max_series_gets_its_load_once_a_series_is_free() -> None:
    """History keeps at most ``max_series`` services; a service past that is not tracked.
    Once one is unregistered there is room again: the next dispatch to the untracked
    service must show its load (as it did when every load step was a full state step),
    not counts with no load or queue at all."""
    flow = FlowRecorder(history=History(max_series=1))
    coordinator = CommBusCoordinator(None, InMemoryCommBus(instrument=False), flow=flow)
    seen: list[dict[str, Any]] = []

    async def handler(e: Envelope) -> Envelope:
        seen.append(flow.history.snapshot(60, 60)["services"].get("b", {}))
        return e

    register(coordinator, "a", handler=handler)
    register(coordinator, "b", handler=handler, max_concurrent=2)
    assert "b" not in flow.history.snapshot(60, 60)["services"]
    assert coordinator.unregister_service("a")
    await asyncio.sleep(0.01)
    assert not (await coordinator.dispatch(target("b"), envelope())).terminated
    after = flow.history.snapshot(60, 60)["services"]["b"]
    assert after["requests"]["total"] == 1
    assert "load" in after, after
    assert after["load"]["peak"] == 1.0
    assert seen[0].get("load", {}).get("peaks", [None])[-1] == 1.0  # mid-dispatch
    coordinator.telemetry.close()


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_wall_clock_step_back_never_makes_an_average_above_the_peak() -> None:
    """History stamps changes with ``time.time`` (a wall clock: NTP may step it back), and
    two loops sharing a recorder hand off stamps out of order. A change stamped before the
    series' last change must not integrate the same time twice: the load was never above
    4, so no average may be above 4 (pre-existing since the history exists; the rework's
    fold keeps it)."""
    clock = _Clock(1000.0)
    h = History(horizon=60, clock=clock)
    h.service_state("svc", 4, 0, 4)
    clock.now = 1000.9
    h.service_load("svc", 3)
    clock.now = 1000.1  # the wall clock stepped back
    h.service_load("svc", 2)
    clock.now = 1000.99
    h.service_load("svc", 0)
    clock.now = 1001.5
    load = h.snapshot(2, 1)["services"]["svc"]["load"]
    assert load["peak"] == 4.0
    for avg in (load["avg"], *load["avgs"]):
        assert avg is None or avg <= load["peak"], load


async def test_a_re_registered_service_starts_with_no_dispatches_in_api_services() -> None:
    """``/api/services`` counts a registration's dispatches: a dispatch that ended before
    the service was unregistered (its record handed off, not drained yet) must not be
    counted for the next registration of the same name (``/api/history`` drops it, so
    the two disagreed). Pre-existing; the per-batch fold (flow_stats) keeps it."""
    flow = FlowRecorder(history=History())
    coordinator = CommBusCoordinator(None, InMemoryCommBus(instrument=False), flow=flow)

    async def handler(e: Envelope) -> Envelope:
        return e

    register(coordinator, "svc", handler=handler)
    for _ in range(3):
        assert not (await coordinator.dispatch(target("svc"), envelope())).terminated
    assert coordinator.unregister_service("svc")
    register(coordinator, "svc", handler=handler)
    row = {r["name"]: r for r in flow.services()}["svc"]
    history = flow.history.snapshot(60, 60)["services"]["svc"]
    assert history["requests"]["total"] == 0
    assert row["requests"] == 0, row
    coordinator.telemetry.close()


def test_a_full_window_keeps_its_first_second() -> None:
    """``window == horizon`` is allowed, and ``since`` is ``floor(now - window)``: the
    answer spans ``horizon + 1`` seconds (the first and the current one partly), so a
    history that stores only ``horizon`` seconds has dropped the first second's counts
    while its rate is still taken over ``generated_at - since`` (pre-existing)."""
    clock = _Clock(1000.5)
    h = History(horizon=10, clock=clock)
    h.service_state("svc", 0, 0, 1)
    for i in range(30):  # one dispatch and one load step in every second
        clock.now = 1000.5 + i
        h.dispatch("svc", "ok", 0, 0.25)
        h.service_load("svc", i % 2)
    clock.now = 1029.75
    snap = h.snapshot(10, 1)
    svc = snap["services"]["svc"]
    assert snap["since"] == 1019.0 and len(snap["buckets"]) == 11
    assert svc["requests"]["buckets"] == [1.0] * 11
    assert svc["load"]["avgs"][0] is not None


def test_dispatch_seconds_retries_and_outcomes_fold_per_second() -> None:
    """The fold's per-dispatch counters, each on its own (a ``seconds`` sum of zero
    passed every suite before): requests, errors, timeouts, retries, seconds."""
    clock = _Clock(1000.25)
    h = History(horizon=10, clock=clock)
    for at, outcome, retries, seconds in (
        (1000.25, "ok", 0, 0.5),
        (1000.75, "timeout", 2, 0.25),
        (1001.0, "error", 1, 0.125),
        (1001.5, "cancelled", 0, 0.0625),
    ):
        clock.now = at
        h.dispatch("svc", outcome, retries, seconds)
    clock.now = 1002.0
    svc = h.snapshot(2, 1)["services"]["svc"]
    assert svc["requests"]["buckets"] == [2.0, 2.0]
    assert svc["timeouts"]["buckets"] == [1.0, 0.0]
    assert svc["errors"]["buckets"] == [0.0, 2.0]
    assert svc["retries"]["buckets"] == [2.0, 1.0]
    assert svc["seconds"]["buckets"] == [0.75, 0.1875]


def test_a_read_stamped_before_the_last_change_never_averages_above_the_peak() -> None:
    """A read whose clock reading is earlier than the last change applied (the wall clock
    stepped back in between) must not average a second's integral up to that change over
    a shorter span: load 2 then 4, never more, so no average above 4 (pre-existing)."""
    clock = _Clock(1000.0)
    h = History(horizon=10, clock=clock)
    h.service_state("svc", 2, 0, 4)
    clock.now = 1000.8
    h.service_load("svc", 4)
    clock.now = 1000.3  # stepped back before the read
    load = h.snapshot(1, 1)["services"]["svc"]["load"]
    assert load["peak"] == 4.0
    for avg in (load["avg"], *load["avgs"]):
        assert avg is None or avg <= 4.0, load


def test_a_failing_event_in_a_drain_leaves_the_rest_for_the_next() -> None:
    """The hand-off is taken as one batch; an event that fails to apply (a bug) is dropped
    alone, and what was handed off after it is applied, in order, by the next drain."""
    now = [100.0]
    h = History(horizon=10, clock=lambda: now[0])
    now[0] = 100.5
    h.service_state("svc", 0, 0, 4)
    h.handoff.append(("broken",))  # no name: applying it raises
    h.dispatch("svc", "ok", 0, 0.5)
    h.dispatch("svc", "error", 1, 0.25)
    with pytest.raises(IndexError):
        h.drain()
    assert len(h.handoff) == 2
    now[0] = 102.0
    counters = h.snapshot(5, 5)["services"]["svc"]
    assert counters["requests"]["total"] == 2 and counters["errors"]["total"] == 1
    assert counters["retries"]["total"] == 1


def test_a_late_count_never_changes_a_stored_row_a_read_may_share() -> None:
    """A read copies only the newest stored second and shares the others; a count for an
    older second goes to a new copy of its row, so a shared row never changes."""
    series = CounterSeries(horizon=10, width=5)
    older = series.row(5.5)
    older[1] += 1
    series.row(6.25)[1] += 1
    shared = list(series.buckets)
    late = series.row(5.75)
    late[1] += 1
    assert shared[0] is older and older[1] == 1  # the row a read holds: unchanged
    assert series.buckets[0] is late and late[1] == 2
