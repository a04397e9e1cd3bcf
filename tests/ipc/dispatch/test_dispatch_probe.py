"""The coordinator's metrics-and-flow seam: ``set_dispatch_probe`` and what a
:class:`~jeeves_control_tower.ipc.telemetry.DispatchProbe` is told, and when."""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import Any

import pytest

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus, RetryPolicy
from jeeves_control_tower.ipc.telemetry import DispatchProbe
from jeeves_control_tower.types import (
    DispatchTarget,
    Envelope,
    RequestContext,
    ServiceDescriptor,
)
from tests.helpers import gated


class Probe:
    """Records every call; checks the in-flight count the coordinator keeps."""

    def __init__(self, order: list[str] | None = None) -> None:
        self.inflight = {"dispatch": 0}
        self.done: list[tuple[str, str, int, BaseException | None, float, float]] = []
        self.changes: list[tuple[str, int, int]] = []
        self.removed: list[str] = []
        self.order = order if order is not None else []

    def dispatched(
        self,
        target: DispatchTarget,
        outcome: str,
        attempts: int,
        error: BaseException | None,
        started: float,
    ) -> None:
        self.order.append("probe")
        self.done.append(
            (target.service_name, outcome, attempts, error, started, time.perf_counter())
        )
        self.inflight["dispatch"] -= 1

    def service_changed(self, service: ServiceDescriptor, queue_depth: int) -> None:
        self.changes.append((service.name, service.current_load, queue_depth))

    def service_removed(self, service: ServiceDescriptor) -> None:
        self.removed.append(service.name)


def env(rid: str = "r1") -> Envelope:
    return Envelope(request_context=RequestContext(request_id=rid, capability="c"))


def target(service: str = "svc", **kw: Any) -> DispatchTarget:
    return DispatchTarget(service_name=service, method="run", **kw)


@pytest.fixture
def coordinator() -> CommBusCoordinator:
    return CommBusCoordinator(
        None,
        InMemoryCommBus(instrument=False),
        instrument=False,
        retry_policy=RetryPolicy(initial_delay=0.0, max_delay=0.0),
        max_queue=0,
    )


def test_a_probe_is_checked_and_told_the_registry_at_once(
    coordinator: CommBusCoordinator,
) -> None:
    coordinator.register_service(ServiceDescriptor(name="svc", service_type="t"))
    with pytest.raises(TypeError, match="not a DispatchProbe"):
        coordinator.set_dispatch_probe(object())  # type: ignore[arg-type]
    probe = Probe()
    assert isinstance(probe, DispatchProbe)
    coordinator.set_dispatch_probe(probe)
    assert coordinator.dispatch_probe is probe
    assert probe.changes == [("svc", 0, 0)]


async def test_every_outcome_is_told_once_with_its_attempts_and_error(
    coordinator: CommBusCoordinator,
) -> None:
    probe = Probe()
    coordinator.set_dispatch_probe(probe)
    coordinator.register_service(ServiceDescriptor(name="svc", service_type="t"))
    coordinator.register_service(ServiceDescriptor(name="sick", service_type="t"))
    coordinator.register_service(ServiceDescriptor(name="far", service_type="t"))
    coordinator.register_service(ServiceDescriptor(name="full", service_type="t", max_concurrent=1))
    coordinator.set_service_health("sick", False)
    boom = RuntimeError("boom")
    inside: list[int] = []
    gate = asyncio.Event()

    async def handler(e: Envelope) -> Envelope:
        inside.append(probe.inflight["dispatch"])
        if e.request_context.request_id == "fail":
            raise boom
        if e.request_context.request_id == "slow":
            await asyncio.sleep(5)
        return e

    async def holder(e: Envelope) -> Envelope:
        await gate.wait()
        return e

    coordinator.register_handler("svc", handler)
    coordinator.register_handler("full", holder)
    ok = await coordinator.dispatch(target(), env())
    failed = await coordinator.dispatch(target(max_retries=2), env("fail"))
    timed_out = await coordinator.dispatch(target(timeout_seconds=0.01), env("slow"))
    unknown = await coordinator.dispatch(target("ghost"), env())
    unhealthy = await coordinator.dispatch(target("sick"), env())
    no_handler = await coordinator.dispatch(target("far"), env())
    held = asyncio.create_task(coordinator.dispatch(target("full"), env()))
    await asyncio.sleep(0)  # holds the one slot; the queue holds none (max_queue=0)
    overloaded = await coordinator.dispatch(target("full"), env())
    cancelled = asyncio.create_task(coordinator.dispatch(target(), env("slow")))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    gate.set()
    await held

    assert not ok.terminated and failed.terminated and timed_out.terminated
    assert unknown.terminated and unhealthy.terminated and no_handler.terminated
    assert overloaded.terminated
    told = [(name, outcome, attempts) for name, outcome, attempts, *_ in probe.done]
    assert told == [
        ("svc", "ok", 1),
        ("svc", "error", 3),
        ("svc", "timeout", 1),
        ("ghost", "unknown_service", 0),
        ("sick", "unhealthy", 0),
        ("far", "no_handler", 0),
        ("full", "overloaded", 0),
        ("svc", "cancelled", 1),  # its attempt ran (cancelled in it)
        ("full", "ok", 1),
    ]
    errors = [error for *_, error, _, _ in probe.done]
    assert errors[0] is None and errors[1] is boom
    assert isinstance(errors[2], TimeoutError)
    assert isinstance(errors[7], asyncio.CancelledError)
    for error, reason in ((errors[3], unknown), (errors[4], unhealthy), (errors[5], no_handler)):
        assert isinstance(error, Exception) and str(error) == reason.termination_reason
    assert all(started <= ended for *_, started, ended in probe.done)
    assert probe.inflight == {"dispatch": 0}
    assert inside[0] == 1  # counted in flight while it ran


async def test_attempts_told_are_the_attempts_made_whatever_ends_the_dispatch(
    coordinator: CommBusCoordinator,
) -> None:
    """``attempts`` is what was made (metrics count ``attempts - 1`` retries): a dispatch
    cancelled in its second attempt made two, one refused a slot for its retry made one."""
    probe = Probe()
    coordinator.set_dispatch_probe(probe)
    coordinator.register_service(ServiceDescriptor(name="svc", service_type="t"))
    coordinator.register_service(ServiceDescriptor(name="one", service_type="t", max_concurrent=1))
    tries: dict[str, int] = {}
    gate, retrying = asyncio.Event(), asyncio.Event()

    async def handler(e: Envelope) -> Envelope:
        rid = e.request_context.request_id
        tries[rid] = tries.get(rid, 0) + 1
        if rid == "hold":
            await gate.wait()
        elif tries[rid] == 1:
            raise RuntimeError("first attempt fails")
        elif rid == "slow":
            retrying.set()
            await asyncio.sleep(5)
        return e

    coordinator.register_handler("svc", handler)
    coordinator.register_handler("one", handler)
    slow = asyncio.create_task(coordinator.dispatch(target(max_retries=1), env("slow")))
    await retrying.wait()  # in its second attempt
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    # the retry finds the one slot taken and no room to wait (max_queue=0): overloaded
    retry = asyncio.create_task(coordinator.dispatch(target("one", max_retries=1), env("r")))
    hold = asyncio.create_task(coordinator.dispatch(target("one"), env("hold")))
    overloaded = await retry
    gate.set()
    await hold
    assert overloaded.terminated and tries["r"] == 1
    told = [(name, outcome, attempts) for name, outcome, attempts, *_ in probe.done]
    assert told == [("svc", "cancelled", 2), ("one", "overloaded", 1), ("one", "ok", 1)]


async def test_the_probe_is_told_before_the_observers_end(
    coordinator: CommBusCoordinator,
) -> None:
    order: list[str] = []

    class Observer:
        observes_attempts = False
        observes_load = False

        def dispatch_start(self, target: Any, envelope: Any) -> None:
            order.append("start")

        def dispatch_end(self, token: Any, *args: Any) -> None:
            order.append("end")

        def service_changed(self, service: Any, queue_depth: int) -> None: ...

        def service_removed(self, service: Any) -> None: ...

    coordinator.add_observer(Observer())  # type: ignore[arg-type]
    coordinator.set_dispatch_probe(Probe(order))
    await coordinator.dispatch(target("ghost"), env())
    assert order == ["start", "probe", "end"]


async def test_a_raising_probe_is_logged_and_the_dispatch_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(Probe):
        def dispatched(self, *args: Any) -> None:
            raise RuntimeError("probe down")

    coordinator = CommBusCoordinator(None, InMemoryCommBus(instrument=False), instrument=False)
    coordinator.set_dispatch_probe(Broken())
    coordinator.register_service(ServiceDescriptor(name="svc", service_type="t"))

    async def handler(e: Envelope) -> Envelope:
        return e

    coordinator.register_handler("svc", handler)
    result = await coordinator.dispatch(target(), env())
    assert not result.terminated
    assert "telemetry_observer_failed" in caplog.text


async def test_a_replaced_probe_hears_the_registry_until_its_dispatches_end(
    coordinator: CommBusCoordinator,
) -> None:
    """A probe replaced (or removed) while dispatches it counted run: it counts no new
    dispatch, each of its dispatches still ends with it, and it hears registry changes (the
    slots they give back among them) until the last one ended; then nothing more."""
    first, second = Probe(), Probe()
    coordinator.set_dispatch_probe(first)
    coordinator.register_service(ServiceDescriptor(name="svc", service_type="t"))
    gates = [asyncio.Event(), asyncio.Event()]

    async def handler(e: Envelope) -> Envelope:
        await gates[int(e.request_context.request_id)].wait()
        return e

    coordinator.register_handler("svc", handler)
    running = [asyncio.create_task(coordinator.dispatch(target(), env(str(i)))) for i in (0, 1)]
    await asyncio.sleep(0)
    coordinator.set_dispatch_probe(second)
    later = asyncio.create_task(coordinator.dispatch(target(), env("1")))  # second's
    await asyncio.sleep(0)
    coordinator.set_service_health("svc", False)
    gates[0].set()
    await running[0]
    assert first.changes[-1] == ("svc", 2, 0)  # one of its own still runs: it still hears
    gates[1].set()
    await asyncio.gather(running[1], later)
    assert [d[1] for d in first.done] == ["ok", "ok"] and first.inflight == {"dispatch": 0}
    assert [d[1] for d in second.done] == ["ok"] and second.inflight == {"dispatch": 0}
    # first heard the slots given back up to its own last one, and nothing after it
    assert first.changes[-1][0] == "svc" and first.changes[-1][1] in (0, 1)
    heard = len(first.changes)
    coordinator.set_service_health("svc", True)
    assert len(first.changes) == heard and second.changes[-1] == ("svc", 0, 0)

    coordinator.set_dispatch_probe(None)  # none in flight: detached at once
    assert coordinator.dispatch_probe is None
    coordinator.unregister_service("svc")
    await coordinator.dispatch(target(), env())
    assert second.removed == [] and len(second.done) == 1


async def test_a_probe_set_again_before_its_dispatches_ended_is_told_each_change_once(
    coordinator: CommBusCoordinator,
) -> None:
    first = Probe()
    coordinator.set_dispatch_probe(first)
    coordinator.register_service(ServiceDescriptor(name="svc", service_type="t"))
    gate = asyncio.Event()
    coordinator.register_handler("svc", gated(gate))
    running = asyncio.create_task(coordinator.dispatch(target(), env()))
    await asyncio.sleep(0)
    coordinator.set_dispatch_probe(None)
    coordinator.set_dispatch_probe(first)  # back while its dispatch runs
    before = len(first.changes)
    coordinator.set_service_health("svc", False)
    assert len(first.changes) == before + 1  # once, not twice
    gate.set()
    await running
    assert coordinator.dispatch_probe is first and first.inflight == {"dispatch": 0}
    coordinator.set_service_health("svc", True)
    assert first.changes[-1] == ("svc", 0, 0)  # still its coordinator's probe


async def test_remove_observer_detaches_it_from_new_dispatches_and_the_registry(
    coordinator: CommBusCoordinator,
) -> None:
    seen: list[str] = []

    class Observer:
        observes_attempts = False

        def dispatch_start(self, target: Any, envelope: Any) -> None:
            seen.append("start")

        def dispatch_end(self, token: Any, *args: Any) -> None:
            seen.append("end")

        def service_changed(self, service: Any, queue_depth: int) -> None:
            seen.append("changed")

        def service_removed(self, service: Any) -> None:
            seen.append("removed")

    observer = Observer()
    coordinator.add_observer(observer)  # type: ignore[arg-type]
    coordinator.register_service(ServiceDescriptor(name="svc", service_type="t"))
    gate = asyncio.Event()
    coordinator.register_handler("svc", gated(gate))
    running = asyncio.create_task(coordinator.dispatch(target(), env()))
    await asyncio.sleep(0)
    coordinator.remove_observer(observer)  # type: ignore[arg-type]
    gate.set()
    await running
    assert seen[-1] == "end"  # the dispatch it saw start ends with it
    before = list(seen)
    await coordinator.dispatch(target(), env())
    coordinator.unregister_service("svc")
    assert seen == before
    coordinator.remove_observer(observer)  # type: ignore[arg-type]  # not attached: no-op


async def test_with_a_probe_alone_the_handler_runs_in_the_callers_context(
    coordinator: CommBusCoordinator,
) -> None:
    """Metrics and flow do not change where a handler runs: as with no telemetry, a
    handler that never suspends runs in the caller's context."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    coordinator.set_dispatch_probe(Probe())
    coordinator.register_service(ServiceDescriptor(name="svc", service_type="t"))

    async def handler(e: Envelope) -> Envelope:
        var.set("set by the handler")
        return e

    coordinator.register_handler("svc", handler)
    await coordinator.dispatch(target(), env())
    assert var.get() == "set by the handler"
