"""FlowRecorder: the bounded flow feed, per-service statistics and totals."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.observability import FlowRecorder, default_flow
from jeeves_control_tower.types import Envelope

from .conftest import Telemetry
from .support import DoThing, GetState, Stored, echo, envelope, register, target

KEYS = {
    "seq",
    "time",
    "pattern",
    "message_type",
    "targets",
    "duration_ms",
    "outcome",
    "error_type",
    "trace_id",
}


def plain_bus(flow: FlowRecorder) -> InMemoryCommBus:
    bus = InMemoryCommBus(instrument=False)
    bus.add_middleware(flow)
    return bus


async def test_one_record_per_message_and_dispatch(
    instrumented_bus: InMemoryCommBus, instrumented_coordinator: CommBusCoordinator, tel: Telemetry
) -> None:
    def indexer(e: Stored) -> None:
        pass

    def bad(e: Stored) -> None:
        raise KeyError("k")

    instrumented_bus.subscribe("Stored", indexer)
    instrumented_bus.subscribe("Stored", bad)
    instrumented_bus.register_handler("DoThing", lambda c: None)
    instrumented_bus.register_handler("GetState", lambda q: 1)
    register(instrumented_coordinator, handler=echo)
    await instrumented_bus.publish(Stored())
    await instrumented_bus.send(DoThing())
    await instrumented_bus.query(GetState())
    await instrumented_coordinator.dispatch(target(), envelope())

    feed = tel.flow.flow()
    assert feed["last_seq"] == 4
    records = feed["records"]
    assert [r["seq"] for r in records] == [1, 2, 3, 4]
    assert all(set(r) == KEYS for r in records)
    publish, send, query, dispatch = records
    assert publish["pattern"] == "publish" and publish["message_type"] == "Stored"
    assert [t.rsplit(".", 1)[-1] for t in publish["targets"]] == ["indexer", "bad"]
    assert publish["outcome"] == "error" and publish["error_type"] == "KeyError"
    assert publish["trace_id"] == f"{tel.span('publish Stored').context.trace_id:032x}"
    assert (send["pattern"], send["outcome"], send["error_type"]) == ("send", "ok", None)
    assert query["pattern"] == "query"
    assert dispatch == {
        **dispatch,
        "pattern": "dispatch",
        "message_type": "run",
        "targets": ["svc"],
        "outcome": "ok",
        "error_type": None,
        "trace_id": f"{tel.span('dispatch svc').context.trace_id:032x}",
    }
    assert all(r["duration_ms"] >= 0 and r["time"] > 1e9 for r in records)


async def test_ring_buffer_is_bounded_and_paged_by_sequence() -> None:
    flow = FlowRecorder(capacity=5)
    bus = plain_bus(flow)
    for _ in range(20):
        await bus.publish(Stored())
    assert flow.last_seq == 20
    assert [r["seq"] for r in flow.flow()["records"]] == [16, 17, 18, 19, 20]
    assert [r["seq"] for r in flow.flow(after=17)["records"]] == [18, 19, 20]
    assert [r["seq"] for r in flow.flow(after=15, limit=2)["records"]] == [16, 17]
    assert flow.flow(after=20)["records"] == []
    assert flow.flow(after=99) == {"last_seq": 20, "records": []}
    assert all(r["trace_id"] is None for r in flow.flow()["records"])


@pytest.mark.parametrize(("after", "limit"), [(-1, 10), (0, 0), (0, 1001), ("1", 10), (0, 2.5)])
def test_bad_paging_values(after: Any, limit: Any) -> None:
    with pytest.raises(ValueError):
        FlowRecorder().flow(after, limit)


def test_bad_capacity() -> None:
    with pytest.raises(ValueError):
        FlowRecorder(capacity=0)


async def test_payloads_only_when_asked() -> None:
    quiet = FlowRecorder()
    await plain_bus(quiet).publish(Stored())
    assert "payload" not in quiet.flow()["records"][0]
    loud = FlowRecorder(record_payloads=True)
    await plain_bus(loud).publish(Stored(item_id="x" * 500))
    payload = loud.flow()["records"][0]["payload"]
    assert payload.startswith("Stored(item_id='xxx") and len(payload) == 200


async def test_service_statistics(
    instrumented_coordinator: CommBusCoordinator, tel: Telemetry
) -> None:
    async def handler(e: Envelope) -> Envelope:
        mode = e.metadata.get("mode")
        if mode == "flaky" and not e.processing_history:
            raise ConnectionError()
        if mode == "broken":
            raise KeyError()
        if mode == "slow":
            await asyncio.sleep(5)
        return e

    def env(mode: str) -> Envelope:
        e = envelope()
        e.metadata["mode"] = mode
        return e

    register(
        instrumented_coordinator, handler=handler, capabilities=["run"], metadata={"zone": "a"}
    )
    register(instrumented_coordinator, "idle", service_type="flow")
    instrumented_coordinator.set_service_health("idle", False)
    for mode in ("ok", "flaky", "broken", "slow"):
        await instrumented_coordinator.dispatch(
            target(max_retries=1, timeout_seconds=0.2), env(mode)
        )
    await instrumented_coordinator.dispatch(target("ghost"), env("ok"))  # unknown: not a row
    await instrumented_coordinator.dispatch(target("idle"), env("ok"))

    rows = {row["name"]: row for row in tel.flow.services()}
    assert list(rows) == ["svc", "idle"]
    svc = rows["svc"]
    assert svc == {
        **svc,
        "service_type": "worker",
        "version": "1.0.0",
        "capabilities": ["run"],
        "healthy": True,
        "current_load": 0,
        "max_concurrent": 10,
        "queue_depth": 0,
        "requests": 4,
        "errors": 1,
        "timeouts": 1,
        "retries": 2,
        "metadata": {"zone": "a"},
    }
    assert svc["avg_latency_ms"] > 0
    assert rows["idle"]["healthy"] is False
    assert (rows["idle"]["requests"], rows["idle"]["errors"]) == (1, 1)
    instrumented_coordinator.unregister_service("svc")
    assert [row["name"] for row in tel.flow.services()] == ["idle"]


async def test_stats(
    instrumented_bus: InMemoryCommBus, instrumented_coordinator: CommBusCoordinator, tel: Telemetry
) -> None:
    instrumented_bus.subscribe("Stored", lambda e: None)
    register(instrumented_coordinator, handler=echo)
    register(instrumented_coordinator, "sick")
    instrumented_coordinator.set_service_health("sick", False)
    await instrumented_bus.publish(Stored())
    await instrumented_bus.publish(Stored())
    await instrumented_bus.send(DoThing())
    await instrumented_coordinator.dispatch(target(), envelope())
    await instrumented_coordinator.dispatch(target("sick"), envelope())
    stats = tel.flow.stats()
    assert stats["uptime_seconds"] >= 0
    assert stats["messages"] == {"publish": {"ok": 2}, "send": {"no_handler": 1}, "query": {}}
    assert stats["dispatch"] == {"ok": 1, "unhealthy": 1}
    assert stats["inflight"] == {"publish": 0, "send": 0, "query": 0, "dispatch": 0}
    assert stats["services"] == {"registered": 2, "healthy": 1}
    assert stats["flow"] == {"last_seq": 5, "capacity": 2000}


async def test_sink_receives_each_record() -> None:
    seen: list[dict[str, Any]] = []
    flow = FlowRecorder(sink=seen.append)
    await plain_bus(flow).publish(Stored())
    assert seen == flow.flow()["records"]


async def test_readers_on_another_thread_never_fail() -> None:
    flow = FlowRecorder(capacity=50)
    bus = plain_bus(flow)
    coordinator = CommBusCoordinator(None, bus, instrument=False)
    coordinator.add_observer(flow)
    bus.subscribe("Stored", lambda e: None)
    stop = threading.Event()
    failures: list[BaseException] = []

    def read() -> None:
        while not stop.is_set():
            try:
                feed = flow.flow(after=max(0, flow.last_seq - 30), limit=1000)
                seqs = [r["seq"] for r in feed["records"]]
                assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
                flow.services()
                flow.stats()
            except BaseException as exc:
                failures.append(exc)
                return

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(3000):
            await bus.publish(Stored())
            if i % 100 == 0:
                register(coordinator, f"s{i}", handler=echo)
                await coordinator.dispatch(target(f"s{i}"), envelope())
                coordinator.unregister_service(f"s{i}")
            if i % 500 == 0:
                await asyncio.sleep(0.001)
    finally:
        stop.set()
        reader.join()
    assert failures == []
    assert len(flow.flow(limit=1000)["records"]) == 50


def test_default_flow_is_one_per_process() -> None:
    assert default_flow() is default_flow()


async def test_a_recorder_that_wants_every_load_step_as_a_change_gets_it() -> None:
    """The documented recipe: a subclass sets ``load_log = None`` and overrides
    ``service_changed``; behind the coordinator's probe it then hears every slot taken
    and given back."""
    loads: list[int] = []

    class EveryStep(FlowRecorder):
        def __init__(self) -> None:
            super().__init__()
            self.load_log = None

        def service_changed(self, service: Any, queue_depth: int) -> None:
            loads.append(service.current_load)
            super().service_changed(service, queue_depth)

    flow = EveryStep()
    coordinator = CommBusCoordinator(None, InMemoryCommBus(instrument=False), flow=flow)
    register(coordinator, handler=echo)
    for _ in range(2):
        await coordinator.dispatch(target(), envelope())
    assert loads == [0, 1, 0, 1, 0]
    assert flow.history.snapshot(60, 60)["services"]["svc"]["load"]["peak"] == 1.0
    coordinator.telemetry.close()


def test_a_dispatch_told_without_its_start_is_recorded() -> None:
    """``dispatched`` with the six arguments it took before ``started`` (keyword, later)."""
    flow = FlowRecorder()
    flow.dispatched(0, target(), "ok", 1, None, 0.25)
    (record,) = flow.flow()["records"]
    assert record["pattern"] == "dispatch" and record["duration_ms"] == 250.0
