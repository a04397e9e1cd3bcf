"""The counters and histograms kept in plain Python and folded in at scrape time: exact
against counts of what happened, also with scrapes racing the writers on other threads, and
after a bus is garbage-collected."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.observability import get_metrics
from jeeves_control_tower.observability.aggregate import Aggregate, Cell
from jeeves_control_tower.observability.metrics import LATENCY_BUCKETS

from .support import DoThing, GetState, Stored, echo, envelope, register, target


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_bus_and_dispatch_counts_are_exact() -> None:
    registry = CollectorRegistry()
    bus = InMemoryCommBus(registry=registry, tracing=False, flow=False)
    coordinator = CommBusCoordinator(None, bus, registry=registry, tracing=False, flow=False)
    register(coordinator, handler=echo)
    bus.subscribe("Stored", lambda e: None)
    bus.register_handler("DoThing", lambda c: None)

    async def answer(q: GetState) -> int:
        return 1

    bus.register_handler("GetState", answer)
    for _ in range(37):
        await bus.publish(Stored())
    for _ in range(5):
        await bus.send(DoThing())
        await bus.query(GetState())
    for _ in range(3):
        await coordinator.dispatch(target(), envelope())
    labels = {"pattern": "publish", "message_type": "Stored"}
    assert value(registry, "commbus_messages_total", outcome="ok", **labels) == 37
    assert value(registry, "commbus_message_duration_seconds_count", **labels) == 37
    assert value(registry, "commbus_message_duration_seconds_bucket", le="+Inf", **labels) == 37
    assert value(registry, "commbus_messages_total", pattern="send", message_type="DoThing",
                 outcome="ok") == 5  # fmt: skip
    assert (
        registry.get_sample_value(
            "commbus_timeouts_total", {"pattern": "query", "target": "GetState"}
        )
        == 0
    )  # the query's timeout series exists from its first message
    assert value(registry, "commbus_dispatch_total", service="svc", method="run",
                 outcome="ok") == 3  # fmt: skip
    assert value(registry, "commbus_dispatch_retries_total", service="svc", method="run") == 0
    for pattern in ("publish", "send", "query", "dispatch"):
        assert value(registry, "commbus_inflight_messages", pattern=pattern) == 0
    text = generate_latest(registry).decode()
    first = f'le="{LATENCY_BUCKETS[0]}"'
    assert f"commbus_message_duration_seconds_bucket{{{first}," in text


async def test_buckets_are_cumulative_and_sum_is_the_sum() -> None:
    registry = CollectorRegistry()
    bus = InMemoryCommBus(registry=registry, tracing=False, flow=False)

    async def slow(e: Stored) -> None:
        await asyncio.sleep(0.003)

    bus.subscribe("Stored", slow)
    for _ in range(4):
        await bus.publish(Stored())
    labels = {"pattern": "publish", "message_type": "Stored"}
    under_1ms = value(registry, "commbus_message_duration_seconds_bucket", le="0.001", **labels)
    assert under_1ms == 0
    assert value(registry, "commbus_message_duration_seconds_bucket", le="30.0", **labels) == 4
    total = value(registry, "commbus_message_duration_seconds_sum", **labels)
    assert 4 * 0.003 <= total < 4 * 1.0


def assert_histograms_consistent(registry: CollectorRegistry) -> None:
    """In one scrape: each series' buckets never decrease and ``+Inf`` equals ``_count``."""
    for family in registry.collect():
        if family.type != "histogram":
            continue
        buckets: dict[tuple[tuple[str, str], ...], list[float]] = {}
        counts: dict[tuple[tuple[str, str], ...], float] = {}
        for sample in family.samples:
            key = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
            if sample.name.endswith("_bucket"):
                buckets.setdefault(key, []).append(sample.value)
            elif sample.name.endswith("_count"):
                counts[key] = sample.value
        for key, values in buckets.items():
            assert values == sorted(values) and values[-1] == counts[key]


def test_quick_counts_fold_into_ok_and_the_first_bucket() -> None:
    """``Cell.quick`` ("ok" in the first bucket, counted as one number) is in both the "ok"
    count and the first bucket once merged, and in neither twice."""
    cell = Cell(LATENCY_BUCKETS)
    cell.quick = 3
    cell.outcomes.update({"ok": 2, "error": 1})
    cell.counts[0], cell.counts[4] = 1, 2
    total = Cell(LATENCY_BUCKETS)
    total.merge(cell)
    total.merge(cell)
    assert total.outcomes == {"ok": 2 * (2 + 3), "error": 2}
    assert total.counts[0] == 2 * (1 + 3) and total.counts[4] == 2 * 2 and total.quick == 0
    assert sum(total.counts) == sum(total.outcomes.values())


def test_a_merge_racing_its_writer_sees_outcomes_and_buckets_agree() -> None:
    """A scrape (``Cell.merge``) on one thread while the loop thread records messages: the
    outcome counts and the buckets it takes hold the same messages (``messages_total``
    and the histogram's ``_count`` agree), however the threads interleave (a tiny switch
    interval makes them interleave inside merges and inside messages)."""
    cell = Cell(LATENCY_BUCKETS)
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            cell.observe("ok", 0.001, 0)  # the outcome counted, then the bucket
            cell.quick += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(20_000):
            total = Cell(LATENCY_BUCKETS)
            total.merge(cell)
            assert total.outcomes.get("ok", 0) == sum(total.counts)
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)


def test_scrapes_racing_writers_on_other_threads_lose_nothing() -> None:
    """Buses on two event-loop threads share a registry; the main thread scrapes all along:
    every scrape is monotonic and each series consistent, and the last one is exact."""
    registry = CollectorRegistry()
    per_thread = 20_000
    labels = {"pattern": "publish", "message_type": "Stored", "outcome": "ok"}
    scraping = threading.Event()  # the writers start once a scrape ran (else, on a loaded
    # machine, they may be done before the main thread is scheduled again: no race tested)

    def writer() -> None:
        async def run() -> None:
            scraping.wait()
            bus = InMemoryCommBus(registry=registry, tracing=False, flow=False)
            bus.subscribe("Stored", lambda e: None)
            for i in range(per_thread):
                await bus.publish(Stored())
                if i % 100 == 0:
                    await asyncio.sleep(0)

        asyncio.run(run())

    threads = [threading.Thread(target=writer) for _ in range(2)]
    get_metrics(registry)
    for t in threads:
        t.start()
    last = 0.0
    scrapes = 0
    try:
        while any(t.is_alive() for t in threads):
            scrapes += 1
            seen = value(registry, "commbus_messages_total", **labels)
            assert seen >= last
            last = seen
            assert_histograms_consistent(registry)
            scraping.set()
    finally:
        scraping.set()  # a failed scrape leaves no writer waiting
    for t in threads:
        t.join()
    assert scrapes > 0 and last <= 2 * per_thread  # scrapes ran while the writers wrote
    assert value(registry, "commbus_messages_total", **labels) == 2 * per_thread
    hist = {"pattern": "publish", "message_type": "Stored"}
    assert value(registry, "commbus_message_duration_seconds_count", **hist) == 2 * per_thread


async def test_counts_of_a_collected_bus_stay() -> None:
    registry = CollectorRegistry()
    bus = InMemoryCommBus(registry=registry, tracing=False, flow=False)
    bus.subscribe("Stored", lambda e: None)
    for _ in range(6):
        await bus.publish(Stored())
    del bus
    gc.collect()
    labels = {"pattern": "publish", "message_type": "Stored"}
    assert value(registry, "commbus_messages_total", outcome="ok", **labels) == 6
    assert value(registry, "commbus_message_duration_seconds_count", **labels) == 6
    other = InMemoryCommBus(registry=registry, tracing=False, flow=False)
    other.subscribe("Stored", lambda e: None)
    await other.publish(Stored())
    assert value(registry, "commbus_messages_total", outcome="ok", **labels) == 7


async def test_a_failing_series_lookup_does_not_leak_in_flight() -> None:
    registry = CollectorRegistry()
    bus = InMemoryCommBus(registry=registry, tracing=False, flow=False)
    bus.subscribe("Stored", lambda e: None)
    metrics = get_metrics(registry)

    def boom(value: str) -> str:
        raise RuntimeError("limiter down")

    metrics.message_types = boom  # type: ignore[assignment]
    await bus.publish(Stored())
    assert value(registry, "commbus_telemetry_errors_total", component="metrics") == 1
    assert value(registry, "commbus_inflight_messages", pattern="publish") == 0


def test_a_bus_collected_in_the_middle_of_a_scrape_does_not_hang_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cycle collector may finalize a bus on the scraping thread while the scrape holds
    the collector's lock (a service that subscribes its own method is a cycle): it used to
    wait for that lock forever, and every scrape and new bus after it with it."""
    registry = CollectorRegistry()

    class Service:
        def __init__(self) -> None:
            self.bus = InMemoryCommBus(registry=registry, flow=False)
            self.bus.subscribe("Ev", self.on)

        def on(self, event: object) -> None:
            pass

    async def publish_one(bus: InMemoryCommBus) -> None:
        await bus.publish(DoThing())

    gc.disable()
    try:
        service = Service()
        service.bus.subscribe("DoThing", lambda m: None)
        asyncio.run(publish_one(service.bus))
        del service  # unreachable now, collectable only by the cycle collector
        merge = Aggregate.merge

        def merge_then_collect(self: Aggregate, other: Aggregate) -> None:
            gc.collect()  # as an allocation inside the scrape may trigger it
            merge(self, other)

        monkeypatch.setattr(Aggregate, "merge", merge_then_collect)
        scraped: list[bytes] = []
        scraper = threading.Thread(target=lambda: scraped.append(generate_latest(registry)))
        scraper.daemon = True
        scraper.start()
        scraper.join(timeout=10)
        assert not scraper.is_alive(), "the scrape hangs"
    finally:
        gc.enable()
    monkeypatch.setattr(Aggregate, "merge", merge)
    assert (
        value(
            registry,
            "commbus_messages_total",
            pattern="publish",
            message_type="DoThing",
            outcome="ok",
        )
        == 1
    )
    InMemoryCommBus(registry=registry, flow=False)  # a new bus still attaches


async def test_a_sync_handler_raising_a_base_exception_is_counted_and_leaves_nothing_inflight() -> (
    None
):
    """Without tracing, local messages run no middleware: the probed path itself must
    report a message that a BaseException (here CancelledError) ends."""
    for subscribers in (1, 2):
        registry = CollectorRegistry()
        bus = InMemoryCommBus(registry=registry, tracing=False, flow=False)

        def cancelled(message: object) -> None:
            future = asyncio.get_running_loop().create_future()
            future.cancel()
            future.result()  # raises CancelledError

        for _ in range(subscribers):
            bus.subscribe("DoThing", cancelled)
        bus.register_handler("GetState", cancelled)
        with pytest.raises(asyncio.CancelledError):
            await bus.publish(DoThing())
        with pytest.raises(asyncio.CancelledError):
            await bus.send(GetState())
        for pattern, message_type in (("publish", "DoThing"), ("send", "GetState")):
            labels = {"pattern": pattern, "message_type": message_type, "outcome": "cancelled"}
            assert value(registry, "commbus_messages_total", **labels) == 1, (subscribers, labels)
            assert value(registry, "commbus_inflight_messages", pattern=pattern) == 0


async def test_a_message_cancelled_in_a_middleware_after_hook_is_reported() -> None:
    registry = CollectorRegistry()
    bus = InMemoryCommBus(registry=registry, flow=False)
    entered = asyncio.Event()

    class SlowAfter:
        async def after(
            self, ctx: object, message: object, result: object, error: object
        ) -> object:
            entered.set()
            await asyncio.sleep(10)
            return result

    bus.add_middleware(SlowAfter())
    bus.subscribe("DoThing", lambda m: None)
    task = asyncio.create_task(bus.publish(DoThing()))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    labels = {"pattern": "publish", "message_type": "DoThing", "outcome": "cancelled"}
    assert value(registry, "commbus_messages_total", **labels) == 1
    assert value(registry, "commbus_inflight_messages", pattern="publish") == 0


async def test_a_message_ended_by_a_sync_after_hook_raising_a_base_exception_is_reported() -> None:
    registry = CollectorRegistry()
    bus = InMemoryCommBus(registry=registry, flow=False)

    class CancellingAfter:
        def after(self, ctx: object, message: object, result: object, exc: object) -> object:
            raise asyncio.CancelledError

    bus.add_middleware(CancellingAfter())
    bus.subscribe("DoThing", lambda m: None)
    with pytest.raises(asyncio.CancelledError):
        await bus.publish(DoThing())
    labels = {"pattern": "publish", "message_type": "DoThing", "outcome": "cancelled"}
    assert value(registry, "commbus_messages_total", **labels) == 1
    assert value(registry, "commbus_inflight_messages", pattern="publish") == 0


async def test_a_dispatch_ending_is_in_flight_or_counted_for_a_reader_never_in_neither() -> None:
    """A reader (another thread) may look at any point of a dispatch's end: the flow feed
    records it before it leaves flight."""
    from jeeves_control_tower.observability import FlowRecorder

    flow = FlowRecorder()
    coordinator = CommBusCoordinator(
        None, InMemoryCommBus(instrument=False), registry=CollectorRegistry(), flow=flow,
        tracing=False,
    )  # fmt: skip
    register(coordinator, handler=echo)
    seen: list[int] = []
    record = flow.dispatched

    def dispatched(*args: Any, **kwargs: Any) -> None:  # as a reader between the steps
        stats = flow.stats()
        seen.append(stats["inflight"]["dispatch"] + sum(stats["dispatch"].values()))
        record(*args, **kwargs)

    flow.dispatched = dispatched  # type: ignore[method-assign]
    await coordinator.dispatch(target(), envelope())
    assert seen == [1]
    stats = flow.stats()
    assert stats["inflight"]["dispatch"] == 0 and stats["dispatch"] == {"ok": 1}
