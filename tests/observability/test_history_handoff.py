"""The history's hand-off: changes recorded without a lock on the loop and folded when read
(or when the hand-off is full) give exactly what recording them one by one would."""

from __future__ import annotations

import asyncio
import gc
import random
import threading
from typing import Any

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus, RetryPolicy
from jeeves_control_tower.observability import FlowRecorder
from jeeves_control_tower.observability.history import History
from jeeves_control_tower.types import Envelope
from tests.helpers import traced_memory

from .support import DoThing, echo, envelope, register, target

T0 = 1_000_000.0  # with times on a 1/128 s grid and small integer values every sum is exact


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _reference_gauge(
    steps: list[tuple[float, float]], grid: list[float], now: float, step: int
) -> tuple[list[float | None], list[float | None]]:
    """Time-weighted average and peak per bucket of a step function, by brute force:
    ``steps`` are (time, value) in order, the first one where the series begins."""
    avgs: list[float | None] = []
    peaks: list[float | None] = []
    for start in grid:
        end = min(start - start % step + step, now) if start % step else min(start + step, now)
        integral = span = 0.0
        peak: float | None = None
        for i, (at, value) in enumerate(steps):
            until = steps[i + 1][0] if i + 1 < len(steps) else now
            lo, hi = max(at, start), min(until, end)
            if at < end and until >= start and (hi > lo or start <= at < end):
                peak = value if peak is None else max(peak, value)
            if hi > lo:
                integral += value * (hi - lo)
                span += hi - lo
        avgs.append(round(integral / span, 3) if span > 0 else None)
        peaks.append(peak)
    return avgs, peaks


def test_many_changes_between_reads_fold_exactly() -> None:
    """Thousands of load steps, queue changes and dispatches (many hand-off batches) between
    two reads: every bucket's average, peak and count is what a brute-force replay gives."""
    rng = random.Random(15)
    clock = Clock(T0 + 1 / 128)  # changes fall between whole seconds (bucket edges)
    h = History(horizon=120, clock=clock)
    h.service_state("svc", 0, 0, 4)
    load_steps: list[tuple[float, float]] = [(clock.now, 0.0)]
    queue_steps: list[tuple[float, float]] = [(clock.now, 0.0)]
    requests: dict[float, int] = {}
    errors = 0
    load = queue = 0
    for _ in range(5000):
        clock.now += rng.choice((0.0, 1 / 64, 1 / 64, 1 / 32, 1 / 16))
        if rng.random() < 0.005:
            clock.now += 2.5  # seconds with no change at all
        kind = rng.random()
        if kind < 0.6:
            load = max(0, min(4, load + rng.choice((-1, 1))))
            h.service_load("svc", load)
            load_steps.append((clock.now, float(load)))
        elif kind < 0.7:
            queue = rng.randrange(3)
            h.service_state("svc", load, queue, 4)
            queue_steps.append((clock.now, float(queue)))
            load_steps.append((clock.now, float(load)))
        else:
            outcome = rng.choice(("ok", "ok", "error", "timeout"))
            errors += outcome == "error"
            h.dispatch("svc", outcome, 0, 0.125)
            second = float(int(clock.now))
            requests[second] = requests.get(second, 0) + 1
    clock.now += 0.5
    now = clock.now
    snap = h.snapshot(120, 4)
    svc = snap["services"]["svc"]
    grid = snap["buckets"]
    for name, steps in (("load", load_steps), ("queue", queue_steps)):
        avgs, peaks = _reference_gauge(steps, grid, now, 4)
        assert svc[name]["avgs"] == avgs, name
        assert svc[name]["peaks"] == peaks, name
    expected = [
        float(sum(n for s, n in requests.items() if start <= s < start - start % 4 + 4))
        for start in grid
    ]
    assert svc["requests"]["buckets"] == expected
    in_window = sum(n for s, n in requests.items() if s >= snap["since"])
    assert svc["requests"]["total"] == in_window > 100
    assert 0 < svc["errors"]["total"] <= errors


def test_a_removed_service_keeps_nothing_of_its_earlier_registration() -> None:
    clock = Clock(T0)
    h = History(horizon=60, clock=clock)
    h.service_state("svc", 0, 0, 2)
    for i in range(300):  # more than one hand-off batch
        clock.now += 0.125
        h.service_load("svc", i % 3)
        h.dispatch("svc", "ok", 0, 0.0)
    h.service_removed("svc")
    assert h.snapshot(60, 1)["services"] == {}
    clock.now += 1.0
    h.service_load("svc", 2)  # not registered again yet: nothing to step
    h.service_state("svc", 1, 0, 5)
    clock.now += 1.0
    svc = h.snapshot(60, 1)["services"]["svc"]
    assert svc["capacity"] == 5 and svc["requests"]["total"] == 0
    assert svc["load"]["peak"] == 1.0 and svc["load"]["avg"] == 1.0


def test_nobody_reading_keeps_memory_bounded() -> None:
    """Writers fold the hand-off themselves when it is full: 100,000 load steps (or
    dispatches) with no read retain the stored seconds only, and the read after is exact."""
    retained, peaks, snaps = [], [], []
    for kind in ("load", "dispatch"):
        clock = Clock(T0)
        h = History(horizon=60, clock=clock)
        h.service_state("svc", 0, 0, 2)
        gc.collect()
        with traced_memory() as memory:
            for i in range(1, 100_001):  # 1,024 a second, ending at T0 + 97.65625
                clock.now = T0 + i / 1024
                if kind == "load":
                    h.service_load("svc", i & 1)  # 1, 0, 1, ... for 1/1024 s each
                else:
                    h.dispatch("svc", "ok", 0, 0.001)
            assert len(h.handoff) < 128  # the writers drained it
            peaks.append(memory.read()[1])
            h.drain()
            # a full collection empties the interpreter's free lists (of tuples and floats):
            # what they hold for reuse is not retained by the history
            gc.collect()
            retained.append(memory.read()[0])
        snaps.append(h.snapshot(30, 30))
    assert max(retained) < 40_000, f"{retained} bytes retained"
    # at most 128 changes wait at any time (100,000 waiting would hold ~30 MB)
    assert max(peaks) < 200_000, f"{peaks} bytes at the peak"
    load = snaps[0]["services"]["svc"]["load"]
    assert load["avg"] == 0.5 and load["peak"] == 1.0
    since = snaps[1]["since"]
    dispatched = sum(T0 + i / 1024 >= since for i in range(1, 100_001))
    assert snaps[1]["services"]["svc"]["requests"]["total"] == dispatched > 30_000


async def test_a_read_in_the_middle_of_a_dispatch_sees_its_slot_and_not_its_end() -> None:
    flow = FlowRecorder(history=History())
    coordinator = CommBusCoordinator(None, InMemoryCommBus(instrument=False), flow=flow)
    seen: list[dict[str, Any]] = []

    async def handler(e: Envelope) -> Envelope:
        seen.append(flow.history.snapshot(60, 60)["services"]["svc"])
        reader = threading.Thread(
            target=lambda: seen.append(flow.history.snapshot(60, 60)["services"]["svc"])
        )
        reader.start()
        await asyncio.to_thread(reader.join)
        return e

    register(coordinator, handler=handler, max_concurrent=3)
    for _ in range(3):
        assert not (await coordinator.dispatch(target(), envelope())).terminated
    after = flow.history.snapshot(60, 60)["services"]["svc"]
    for i, during in enumerate(seen):  # the i // 2-th dispatch is in flight
        assert during["load"]["peaks"][-1] == 1.0
        assert during["requests"]["total"] == i // 2
    assert after["requests"]["total"] == 3 and after["load"]["peak"] == 1.0
    assert after["capacity"] == 3
    coordinator.telemetry.close()


async def test_readers_racing_the_loop_see_every_dispatch_exactly_once() -> None:
    """A reader thread reads the history and the flow's statistics while the loop dispatches
    (several hand-off batches): totals only grow, never past what was done, and the last
    read counts every dispatch; the load never reads above the slots."""
    flow = FlowRecorder(capacity=64, history=History())
    coordinator = CommBusCoordinator(None, InMemoryCommBus(instrument=False), flow=flow)
    done = 0

    async def handler(e: Envelope) -> Envelope:
        await asyncio.sleep(0)
        return e

    register(coordinator, handler=handler, max_concurrent=2)
    stop = threading.Event()
    failures: list[str] = []

    def read() -> None:
        last = 0.0
        while not stop.is_set():
            before = done
            svc = flow.history.snapshot(60, 60)["services"]["svc"]
            total = svc["requests"]["total"]
            if not before <= total <= done + 4 or total < last:  # 4 at a time
                failures.append(f"requests {total} after {last}, done {before}..{done}")
            if svc["load"]["peak"] > 2 or (svc["load"]["avg"] or 0) > svc["load"]["peak"]:
                failures.append(f"load {svc['load']}")
            last = total

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(300):
            results = await asyncio.gather(
                *(coordinator.dispatch(target(), envelope()) for _ in range(4))
            )
            assert not any(r.terminated for r in results)
            done += 4
    finally:
        stop.set()
        reader.join()
    assert failures == []
    svc = flow.history.snapshot(60, 60)["services"]["svc"]
    assert svc["requests"]["total"] == 1200 and svc["load"]["peak"] == 2.0
    assert svc["queue"]["peak"] == 2.0  # four at once, two slots
    row = {r["name"]: r for r in flow.services()}["svc"]
    assert (row["requests"], row["current_load"]) == (1200, 0)
    coordinator.telemetry.close()


async def test_service_statistics_stay_exact_past_the_ring() -> None:
    """Many more dispatches than the flow ring holds, of every outcome, between two reads."""
    flow = FlowRecorder(capacity=7, history=History())
    coordinator = CommBusCoordinator(None, InMemoryCommBus(instrument=False), flow=flow)

    async def handler(e: Envelope) -> Envelope:
        mode = e.metadata["mode"]
        if mode == "flaky" and not e.processing_history:
            raise ConnectionError()
        if mode == "broken":
            raise KeyError()
        return e

    register(coordinator, handler=handler)
    modes = ["ok"] * 50 + ["flaky"] * 30 + ["broken"] * 20
    random.Random(6).shuffle(modes)
    for mode in modes:
        e = envelope()
        e.metadata["mode"] = mode
        await coordinator.dispatch(target(max_retries=1, timeout_seconds=5), e)
    row = {r["name"]: r for r in flow.services()}["svc"]
    assert (row["requests"], row["errors"], row["timeouts"]) == (100, 20, 0)
    assert row["retries"] == 30 + 20  # a flaky one retries once, a broken one too
    assert flow.stats()["dispatch"] == {"ok": 80, "error": 20}
    assert flow.last_seq == 100
    history = flow.history.snapshot(60, 60)["services"]["svc"]
    assert history["requests"]["total"] == 100 and history["errors"]["total"] == 20
    assert history["retries"]["total"] == 50
    coordinator.telemetry.close()


async def test_an_unread_coordinator_keeps_both_hand_offs_short() -> None:
    """The registry writes load steps straight into the history's hand-off, and the flow
    recorder counts dispatches from its records: with nobody reading, the recorder's drain
    (once per 128 records) empties both, so neither holds more than a drain's worth; the
    read after counts every dispatch and every slot."""
    flow = FlowRecorder(history=History())
    coordinator = CommBusCoordinator(None, InMemoryCommBus(instrument=False), flow=flow)
    register(coordinator, handler=echo, max_concurrent=4)
    longest = 0
    for _ in range(3000):
        assert not (await coordinator.dispatch(target(), envelope())).terminated
        longest = max(longest, len(flow.history.handoff))
        assert len(flow.handoff) < 128
    assert longest <= 2 * 128
    svc = flow.history.snapshot(60, 60)["services"]["svc"]
    assert svc["requests"]["total"] == 3000 and svc["load"]["peak"] == 1.0
    assert flow.services()[0]["requests"] == 3000
    coordinator.telemetry.close()


async def test_a_service_the_history_does_not_keep_is_still_counted_by_the_flow() -> None:
    """Past the history's ``max_series`` a service has no history, but the recorder's own
    per-service counts (one loop counts both) still count its dispatches."""
    flow = FlowRecorder(history=History(max_series=1))
    coordinator = CommBusCoordinator(None, InMemoryCommBus(instrument=False), flow=flow)
    register(coordinator, "a", handler=echo)
    register(coordinator, "b", handler=echo)
    for name, times in (("a", 2), ("b", 3), ("a", 1)):
        for _ in range(times):
            assert not (await coordinator.dispatch(target(name), envelope())).terminated
    rows = {row["name"]: row["requests"] for row in flow.services()}
    assert rows == {"a": 3, "b": 3}
    assert set(flow.history.snapshot(60, 60)["services"]) == {"a"}
    assert flow.history.snapshot(60, 60)["services"]["a"]["requests"]["total"] == 3
    coordinator.telemetry.close()


def test_a_batch_of_one_services_steps_in_one_second_folds_as_one_by_one() -> None:
    """A batch of one service's steps within its newest stored second (what the registry's
    load log hands off for a busy service): each second's average and peak are what a
    brute-force replay gives, and a step stamped out of order (a clock stepped back) is
    counted from the one before."""
    rng = random.Random(7)
    for out_of_order in (False, True):
        clock = Clock(T0 + 1 / 128)
        h = History(horizon=60, clock=clock)
        h.service_state("svc", 0, 0, 8)
        steps: list[tuple[float, float]] = [(clock.now, 0.0)]
        load = 0
        for second in range(3):
            h.drain()
            clock.now = T0 + second + 1 / 128
            for i in range(100):  # one batch, inside one second
                clock.now += 1 / 128 if i < 98 else 0.0
                load = max(0, min(8, load + rng.choice((-1, 1, 1))))
                h.service_load("svc", load)
                steps.append((clock.now, float(load)))
            if out_of_order:
                clock.now -= 1 / 64
                h.service_load("svc", load + 1)
                steps.append((steps[-1][0], float(load + 1)))  # counted from the last step
                load += 1
        clock.now = T0 + 3.5
        snap = h.snapshot(60, 1)
        avgs, peaks = _reference_gauge(steps, snap["buckets"], clock.now, 1)
        load_view = snap["services"]["svc"]["load"]
        assert load_view["avgs"] == avgs and load_view["peaks"] == peaks


async def _dispatch(coordinator: CommBusCoordinator, times: int = 1, **kw: Any) -> None:
    for _ in range(times):
        await coordinator.dispatch(target(**kw), envelope())


async def test_the_load_log_stays_bounded_when_no_record_drains_it() -> None:
    """Load steps with no flow record to drain them: a dispatch retrying thousands of times
    (two steps per attempt, one record), and dispatches after the telemetry was closed
    while one ran (the closed probe still hears the slots; the records go nowhere). The
    registry drains the log itself (at 4 x 128 steps)."""
    flow = FlowRecorder(history=History())
    peak = 0

    async def failing(e: Envelope) -> Envelope:
        nonlocal peak
        peak = max(peak, len(flow.history.handoff))
        raise ConnectionError("down")

    retrying = CommBusCoordinator(
        None,
        InMemoryCommBus(instrument=False),
        flow=flow,
        retry_policy=RetryPolicy(initial_delay=0, max_delay=0),
    )
    register(retrying, handler=failing)
    await _dispatch(retrying, max_retries=3000, timeout_seconds=600)
    assert 0 < peak <= 4 * 128
    retrying.telemetry.close()

    flow = FlowRecorder(history=History())
    gate = asyncio.Event()
    first = [True]

    async def first_waits(e: Envelope) -> Envelope:
        if first.pop() if first else False:
            await gate.wait()
        return e

    closed = CommBusCoordinator(None, InMemoryCommBus(instrument=False), flow=flow)
    register(closed, handler=first_waits, max_concurrent=8)
    stuck = asyncio.ensure_future(closed.dispatch(target(), envelope()))
    await asyncio.sleep(0)
    closed.telemetry.close()
    for _ in range(3000):
        await _dispatch(closed)
        peak = max(peak, len(flow.history.handoff))
    assert peak <= 4 * 128
    gate.set()
    await stuck


async def test_a_late_count_lands_in_the_second_it_ended() -> None:
    """Two recorders on one history: one drains its records late (after the other counted
    a later second), and a read long after a dispatch: each count is in the second the
    dispatch ended, on the history's clock."""
    clock = Clock(T0 + 0.5)
    history = History(horizon=60, clock=clock)
    quiet, busy = FlowRecorder(history=history), FlowRecorder(history=history)
    late = CommBusCoordinator(None, InMemoryCommBus(instrument=False), flow=quiet)
    early = CommBusCoordinator(None, InMemoryCommBus(instrument=False), flow=busy)
    register(late, handler=echo)
    register(early, handler=echo)
    await _dispatch(late, 3)  # fewer than a drain's worth: waits in quiet's hand-off
    clock.now = T0 + 2.5
    await _dispatch(early, 128)  # drained at once, into second T0 + 2
    clock.now = T0 + 9.5
    snap = history.snapshot(60, 1)
    counted = dict(
        zip(snap["buckets"], snap["services"]["svc"]["requests"]["buckets"], strict=True)
    )
    assert {at: n for at, n in counted.items() if n} == {T0: 3.0, T0 + 2: 128.0}
    early.telemetry.close()
    late.telemetry.close()


def test_counts_handed_off_late_keep_the_seconds_in_order() -> None:
    """A count for an older second goes to that second's row, made in its place when
    missing (the full ring gives up its oldest second for it), or nowhere when it is older
    than all the full ring keeps."""
    clock = Clock(T0)
    h = History(horizon=4, clock=clock)  # keeps 5 seconds
    for at in (5.25, 3.5, 1.0, 0.5, 4.5, 2.5, 0.25, 5.75, 3.25):
        clock.now = T0 + at
        h.dispatch("svc", "ok", 0, 0.0)
    clock.now = T0 + 5.9
    snap = h.snapshot(4, 1)
    counted = dict(
        zip(snap["buckets"], snap["services"]["svc"]["requests"]["buckets"], strict=True)
    )
    assert counted == {T0 + 1: 1.0, T0 + 2: 1.0, T0 + 3: 2.0, T0 + 4: 1.0, T0 + 5: 2.0}


def test_a_history_outlives_the_recorders_it_served() -> None:
    """Every recorder made on one history registers a drain with it: the dead ones are
    forgotten, so neither memory nor a read grows with the recorders made."""
    h = History()
    FlowRecorder(history=h)
    with traced_memory() as memory:
        for _ in range(20_000):
            FlowRecorder(history=h)
        retained = memory.read()[0]
    assert retained < 50_000, f"{retained} bytes retained"


async def test_a_failing_history_leaves_the_flow_numbered_and_reports_it() -> None:
    """The history raising while a drain counts dispatches (here: a malformed hand-off):
    every record is still in the ring with its number, the recorder's own counts are
    kept, the failure is reported, and the next drain counts again."""
    failures: list[str] = []
    flow = FlowRecorder(
        history=History(), on_error=lambda part, hook, exc: failures.append(f"{part}:{hook}")
    )
    coordinator = CommBusCoordinator(None, InMemoryCommBus(instrument=False), flow=flow)
    register(coordinator, handler=echo)
    await _dispatch(coordinator, 2)
    flow.history.handoff.append(("removed",))  # no name: applying it raises
    await _dispatch(coordinator)
    assert flow.last_seq == 3 and failures == ["flow:history"]
    assert [r["seq"] for r in flow.flow()["records"]] == [1, 2, 3]
    assert flow.services()[0]["requests"] == 3
    await _dispatch(coordinator)
    assert flow.history.snapshot(60, 60)["services"]["svc"]["requests"]["total"] == 4
    coordinator.telemetry.close()


async def test_a_recorder_gone_still_has_its_dispatches_counted_in_a_shared_history() -> None:
    """A recorder feeding a shared history is closed and collected with dispatches still
    handed off (fewer than a drain's worth): they are counted in the history as it goes."""
    history = History()
    flow: FlowRecorder | None = FlowRecorder(history=history)
    coordinator: CommBusCoordinator | None = CommBusCoordinator(
        None, InMemoryCommBus(instrument=False), flow=flow
    )
    assert coordinator is not None
    register(coordinator, handler=echo)
    await _dispatch(coordinator, 50)
    coordinator.telemetry.close()
    flow = coordinator = None
    gc.collect()
    assert history.snapshot(60, 60)["services"]["svc"]["requests"]["total"] == 50


async def test_a_dispatch_to_a_service_not_shown_yet_is_not_counted_once_it_registers() -> None:
    flow = FlowRecorder(history=History())
    coordinator = CommBusCoordinator(None, InMemoryCommBus(instrument=False), flow=flow)
    for _ in range(5):
        assert (await coordinator.dispatch(target("late"), envelope())).terminated
    register(coordinator, "late", handler=echo)
    await _dispatch(coordinator, 2, service="late")
    assert flow.history.snapshot(60, 60)["services"]["late"]["requests"]["total"] == 2
    assert flow.services()[0]["requests"] == 2
    coordinator.telemetry.close()


async def test_a_reporter_that_reads_the_recorder_does_not_hang_a_drain() -> None:
    """A failure counting into the history is reported once the recorder's lock is
    released: a reporter may read the recorder."""
    seen: list[int] = []
    flow = FlowRecorder(history=History())
    flow.adopt_reporter(lambda part, hook, exc: seen.append(flow.last_seq))
    coordinator = CommBusCoordinator(None, InMemoryCommBus(instrument=False), flow=flow)
    register(coordinator, handler=echo)
    await _dispatch(coordinator)
    flow.history.handoff.append(("removed",))  # applying it raises
    reader = threading.Thread(target=flow.drain, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive() and seen == [1]
    coordinator.telemetry.close()


async def test_bus_traffic_alone_is_drained_once_per_128_records() -> None:
    flow = FlowRecorder(history=History())
    bus = InMemoryCommBus(flow=flow, tracing=False)
    longest = 0

    async def handler(message: Any) -> None:
        return None

    bus.register_handler("DoThing", handler)
    for _ in range(1000):
        await bus.send(DoThing())
        longest = max(longest, len(flow.handoff))
    assert longest < 128 and flow.last_seq == 1000
    bus.telemetry.close()


def test_a_gone_recorders_records_are_handed_off_without_the_lock() -> None:
    """The finalizer of a recorder may run wherever the collector interrupts, the
    history's lock held, maybe: it hands the records off and returns; the next read
    counts them."""
    from collections import deque

    clock = Clock(T0 + 0.5)
    history = History(clock=clock)
    record = (0.0, "dispatch", "run", ("svc",), 0.0, "ok", None, 0, None, 1, T0 + 0.25)
    done = threading.Event()

    def finalize() -> None:
        history.dispatches_left(deque([record]), {"svc"})
        done.set()

    with history._lock:  # as if the collector ran inside a drain
        threading.Thread(target=finalize, daemon=True).start()
        assert done.wait(10)
    clock.now = T0 + 1.5
    assert history.snapshot(60, 60)["services"]["svc"]["requests"]["total"] == 1
