from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from jeeves_control_tower.ipc import (
    CommBusCoordinator,
    DynamicEvent,
    DynamicQuery,
    InMemoryCommBus,
    RetryPolicy,
)
from jeeves_control_tower.ipc.telemetry import LoadLog
from jeeves_control_tower.types import (
    DispatchTarget,
    Envelope,
    RequestContext,
    SchedulingPriority,
    ServiceDescriptor,
)
from tests.helpers import gated


def env(rid: str = "r1") -> Envelope:
    return Envelope(request_context=RequestContext(request_id=rid, capability="execute"))


def target(service: str = "svc", **kw: Any) -> DispatchTarget:
    return DispatchTarget(service_name=service, method="run", **kw)


def register(c: CommBusCoordinator, name: str = "svc", **kw: Any) -> ServiceDescriptor:
    d = ServiceDescriptor(name=name, service_type=kw.pop("service_type", "worker"), **kw)
    assert c.register_service(d)
    return d


class TestRegistry:
    def test_register_get_list_unregister(self, coordinator: CommBusCoordinator) -> None:
        a = register(coordinator, "a", service_type="flow")
        b = register(coordinator, "b", service_type="worker")
        assert not coordinator.register_service(ServiceDescriptor(name="a", service_type="flow"))
        assert coordinator.get_service("a") is a
        assert coordinator.list_services() == [a, b]
        assert coordinator.list_services(service_type="flow") == [a]
        assert coordinator.set_service_health("b", False)
        assert coordinator.list_services() == [a]
        assert coordinator.list_services(healthy_only=False) == [a, b]
        assert not coordinator.set_service_health("zzz", True)
        assert coordinator.unregister_service("a") and not coordinator.unregister_service("a")
        assert coordinator.get_service("a") is None

    def test_register_validates(self, coordinator: CommBusCoordinator) -> None:
        with pytest.raises(TypeError):
            coordinator.register_service({"name": "x"})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="not registered"):
            coordinator.register_handler("ghost", lambda e: e)  # type: ignore[arg-type,return-value]
        register(coordinator)
        with pytest.raises(TypeError):
            coordinator.register_handler("svc", 5)  # type: ignore[arg-type]

    async def test_unregister_drops_handler(self, coordinator: CommBusCoordinator) -> None:
        register(coordinator)

        async def h(e: Envelope) -> Envelope:
            return e

        coordinator.register_handler("svc", h)
        with pytest.raises(ValueError, match="already has"):
            coordinator.register_handler("svc", h)
        coordinator.unregister_service("svc")
        register(coordinator)
        out = await coordinator.dispatch(target(), env())
        assert out.terminated and "no local handler" in (out.termination_reason or "")


class TestDispatchOutcomes:
    async def test_ok(self, coordinator: CommBusCoordinator) -> None:
        register(coordinator)

        async def h(e: Envelope) -> Envelope:
            await asyncio.sleep(0)
            e.outputs["done"] = True
            return e

        coordinator.register_handler("svc", h)
        t = target()
        out = await coordinator.dispatch(t, env())
        assert not out.terminated and out.outputs == {"done": True}
        assert [h["outcome"] for h in out.processing_history] == ["ok"]
        assert coordinator.get_service("svc").current_load == 0  # type: ignore[union-attr]
        assert t.retry_count == 0

    @pytest.mark.parametrize(
        ("setup", "needle"),
        [
            ("unknown", "unknown service 'svc'"),
            ("unhealthy", "service 'svc' is unhealthy"),
            ("no_handler", "service 'svc' has no local handler"),
        ],
    )
    async def test_service_level_failures(
        self, coordinator: CommBusCoordinator, setup: str, needle: str
    ) -> None:
        if setup != "unknown":
            register(coordinator, healthy=setup != "unhealthy")
        out = await coordinator.dispatch(target(), env())
        assert out.terminated and needle in (out.termination_reason or "")
        assert out.completed_at is not None
        assert out.errors[-1]["service"] == "svc"

    async def test_retries_then_error_with_last_message(
        self, coordinator: CommBusCoordinator
    ) -> None:
        register(coordinator)
        calls = []

        async def h(e: Envelope) -> Envelope:
            calls.append(1)
            raise RuntimeError(f"fail #{len(calls)}")

        coordinator.register_handler("svc", h)
        t = target(max_retries=2)
        out = await coordinator.dispatch(t, env())
        assert len(calls) == 3
        assert out.terminated
        assert (
            out.termination_reason
            == "service 'svc' failed after 3 attempt(s): RuntimeError: fail #3"
        )
        assert [x["attempt"] for x in out.processing_history] == [1, 2, 3]
        assert t.retry_count == 0 and t.max_retries == 2

    async def test_retry_then_success(self, coordinator: CommBusCoordinator) -> None:
        register(coordinator)
        calls = []

        def h(e: Envelope) -> Envelope:
            calls.append(1)
            if len(calls) < 3:
                raise ConnectionError("flaky")
            return e

        coordinator.register_handler("svc", h)  # type: ignore[arg-type]
        out = await coordinator.dispatch(target(), env())
        assert not out.terminated
        assert [x["outcome"] for x in out.processing_history] == ["error", "error", "ok"]

    async def test_non_envelope_result_is_an_error(self, coordinator: CommBusCoordinator) -> None:
        register(coordinator)

        async def h(e: Envelope) -> Any:
            return {"not": "an envelope"}

        coordinator.register_handler("svc", h)
        out = await coordinator.dispatch(target(max_retries=0), env())
        assert out.terminated and "expected Envelope" in (out.termination_reason or "")

    async def test_timeout_cancels_attempt(self, coordinator: CommBusCoordinator) -> None:
        register(coordinator)
        cancelled = asyncio.Event()

        async def h(e: Envelope) -> Envelope:
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return e

        coordinator.register_handler("svc", h)
        out = await coordinator.dispatch(target(timeout_seconds=0.05), env())
        assert cancelled.is_set()
        assert out.terminated and "timed out after 0.05s" in (out.termination_reason or "")
        assert coordinator.get_service("svc").current_load == 0  # type: ignore[union-attr]

    async def test_deadline_covers_backoff(self) -> None:
        bus = InMemoryCommBus(instrument=False)
        c = CommBusCoordinator(
            None,
            bus,
            retry_policy=RetryPolicy(initial_delay=1.0, jitter_floor=1.0),
            instrument=False,
        )
        register(c)
        calls = []

        async def h(e: Envelope) -> Envelope:
            calls.append(1)
            raise RuntimeError("x")

        c.register_handler("svc", h)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        out = await c.dispatch(target(timeout_seconds=0.2, max_retries=5), env())
        assert loop.time() - t0 < 0.5
        assert len(calls) == 1
        assert "no time left before the deadline" in (out.termination_reason or "")

    async def test_caller_handler_raising_timeout_error_is_an_error_not_deadline(
        self, coordinator: CommBusCoordinator
    ) -> None:
        register(coordinator)

        async def h(e: Envelope) -> Envelope:
            await asyncio.sleep(0)
            raise TimeoutError("downstream")

        coordinator.register_handler("svc", h)
        out = await coordinator.dispatch(target(max_retries=0), env())
        assert "failed after 1 attempt(s): TimeoutError: downstream" in (
            out.termination_reason or ""
        )

    async def test_bad_arguments_raise(self, coordinator: CommBusCoordinator) -> None:
        with pytest.raises(TypeError):
            await coordinator.dispatch("svc", env())  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await coordinator.dispatch(target(), {})  # type: ignore[arg-type]


class TestAdmission:
    async def test_max_concurrent_enforced_and_priority_order(
        self, coordinator: CommBusCoordinator
    ) -> None:
        register(coordinator, max_concurrent=1)
        gate = asyncio.Event()
        order: list[str] = []
        running = 0
        peak = 0

        async def h(e: Envelope) -> Envelope:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            order.append(e.request_id)
            if e.request_id == "first":
                await gate.wait()
            else:
                await asyncio.sleep(0)
            running -= 1
            return e

        coordinator.register_handler("svc", h)
        first = asyncio.create_task(coordinator.dispatch(target(), env("first")))
        await asyncio.sleep(0)
        prios = [
            ("idle", SchedulingPriority.IDLE),
            ("low", SchedulingPriority.LOW),
            ("normal1", SchedulingPriority.NORMAL),
            ("high", SchedulingPriority.HIGH),
            ("normal2", SchedulingPriority.NORMAL),
            ("realtime", SchedulingPriority.REALTIME),
        ]
        tasks = []
        for rid, p in prios:
            tasks.append(asyncio.create_task(coordinator.dispatch(target(priority=p), env(rid))))
            await asyncio.sleep(0)
        svc = coordinator.get_service("svc")
        assert svc is not None and svc.current_load == 1
        assert coordinator.queue_depth("svc") == 6
        gate.set()
        await asyncio.gather(first, *tasks)
        assert order == ["first", "realtime", "high", "normal1", "normal2", "low", "idle"]
        assert peak == 1 and svc.current_load == 0 and coordinator.queue_depth("svc") == 0

    async def test_overloaded_when_queue_full(self, bus: InMemoryCommBus) -> None:
        c = CommBusCoordinator(None, bus, max_queue=1, instrument=False)
        register(c, max_concurrent=1)
        gate = asyncio.Event()
        c.register_handler("svc", gated(gate))
        t1 = asyncio.create_task(c.dispatch(target(), env("a")))
        t2 = asyncio.create_task(c.dispatch(target(), env("b")))
        await asyncio.sleep(0.01)
        out = await c.dispatch(target(), env("c"))
        assert out.terminated and "overloaded" in (out.termination_reason or "")
        gate.set()
        assert not (await t1).terminated and not (await t2).terminated

    async def test_timeout_while_waiting_for_slot(self, coordinator: CommBusCoordinator) -> None:
        register(coordinator, max_concurrent=1)
        gate = asyncio.Event()
        coordinator.register_handler("svc", gated(gate))
        blocker = asyncio.create_task(coordinator.dispatch(target(), env("a")))
        await asyncio.sleep(0)
        out = await coordinator.dispatch(target(timeout_seconds=0.05), env("b"))
        assert "waiting for a free slot" in (out.termination_reason or "")
        assert coordinator.queue_depth("svc") == 0
        gate.set()
        await blocker
        assert coordinator.get_service("svc").current_load == 0  # type: ignore[union-attr]

    async def test_cancelled_callers_release_everything(
        self, coordinator: CommBusCoordinator
    ) -> None:
        register(coordinator, max_concurrent=2)

        async def h(e: Envelope) -> Envelope:
            await asyncio.sleep(10)
            return e

        coordinator.register_handler("svc", h)
        tasks = [asyncio.create_task(coordinator.dispatch(target(), env(str(i)))) for i in range(6)]
        await asyncio.sleep(0.01)
        svc = coordinator.get_service("svc")
        assert svc is not None and svc.current_load == 2 and coordinator.queue_depth("svc") == 4
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert svc.current_load == 0 and coordinator.queue_depth("svc") == 0

    async def test_unregister_fails_waiters(self, coordinator: CommBusCoordinator) -> None:
        register(coordinator, max_concurrent=1)
        gate = asyncio.Event()
        coordinator.register_handler("svc", gated(gate))
        running = asyncio.create_task(coordinator.dispatch(target(), env("a")))
        waiting = asyncio.create_task(coordinator.dispatch(target(), env("b")))
        await asyncio.sleep(0.01)
        coordinator.unregister_service("svc")
        out = await waiting
        assert out.terminated and "unregistered" in (out.termination_reason or "")
        gate.set()
        assert not (await running).terminated

    async def test_capacity_can_grow_at_run_time(self, coordinator: CommBusCoordinator) -> None:
        register(coordinator, max_concurrent=1)
        gate = asyncio.Event()
        coordinator.register_handler("svc", gated(gate))
        tasks = [asyncio.create_task(coordinator.dispatch(target(), env(str(i)))) for i in range(3)]
        await asyncio.sleep(0.01)
        assert coordinator.queue_depth("svc") == 2
        assert coordinator.set_service_capacity("svc", 3)
        assert coordinator.get_service("svc").current_load == 3  # type: ignore[union-attr]
        gate.set()
        await asyncio.gather(*tasks)

    async def test_load_counter_under_random_failures(
        self, coordinator: CommBusCoordinator
    ) -> None:
        svc = register(coordinator, max_concurrent=4)
        rng = random.Random(7)
        running = 0
        peak = 0
        violations: list[tuple[int, int]] = []

        async def h(e: Envelope) -> Envelope:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            try:
                # granted slots whose waiters have not resumed yet count as load too
                if not running <= svc.current_load <= svc.max_concurrent:
                    violations.append((running, svc.current_load))
                await asyncio.sleep(rng.random() * 0.005)
                roll = rng.random()
                if roll < 0.3:
                    raise RuntimeError("random failure")
                if roll < 0.4:
                    await asyncio.sleep(1)  # will time out
                return e
            finally:
                running -= 1

        coordinator.register_handler("svc", h)
        tasks = [
            asyncio.create_task(
                coordinator.dispatch(
                    target(
                        timeout_seconds=0.2,
                        max_retries=rng.randint(0, 2),
                        priority=rng.choice(list(SchedulingPriority)),
                    ),
                    env(str(i)),
                )
            )
            for i in range(200)
        ]
        await asyncio.sleep(0.05)
        for t in tasks[::17]:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert peak <= 4 and violations == []
        assert svc.current_load == 0 and coordinator.queue_depth("svc") == 0
        assert all(isinstance(r, (Envelope, asyncio.CancelledError)) for r in results)


@dataclass
class GetSessionState:
    session_id: str
    category: str = field(default="query", init=False)


class TestMessaging:
    async def test_broadcast_reaches_subscribers(self, coordinator: CommBusCoordinator) -> None:
        got: list[Any] = []
        coordinator.subscribe("MemoryStored", got.append)
        payload = {"id": 1}
        await coordinator.broadcast("MemoryStored", payload)
        payload["id"] = 2
        assert got == [DynamicEvent("MemoryStored", {"id": 1})]
        with pytest.raises(ValueError):
            await coordinator.broadcast("", {})
        with pytest.raises(TypeError):
            await coordinator.broadcast("X", [])  # type: ignore[arg-type]

    async def test_request_result_and_errors(self, coordinator: CommBusCoordinator) -> None:
        register(coordinator)

        async def lookup(q: DynamicQuery) -> Any:
            if q.payload.get("fail"):
                raise KeyError("gone")
            if q.payload.get("slow"):
                await asyncio.sleep(1)
            return {"echo": q.payload, "service": q.service_name}

        coordinator.register_query_handler("Lookup", lookup)
        assert await coordinator.request("svc", "Lookup", {"a": 1}) == {
            "result": {"echo": {"a": 1}, "service": "svc"}
        }
        assert (await coordinator.request("ghost", "Lookup", {}))[
            "error"
        ] == "unknown service 'ghost'"
        assert (
            "no handler for query 'Nope'" in (await coordinator.request("svc", "Nope", {}))["error"]
        )
        assert "KeyError" in (await coordinator.request("svc", "Lookup", {"fail": 1}))["error"]
        timed = await coordinator.request("svc", "Lookup", {"slow": 1}, timeout_seconds=0.02)
        assert "timed out after 0.02s" in timed["error"]
        coordinator.set_service_health("svc", False)
        assert "unhealthy" in (await coordinator.request("svc", "Lookup", {}))["error"]

    async def test_typed_events_and_queries(self, coordinator: CommBusCoordinator) -> None:
        got: list[Any] = []
        unsub = coordinator.subscribe("GetSessionState", got.append)
        coordinator.register_query_handler("GetSessionState", lambda q: {"session": q.session_id})
        with pytest.raises(ValueError):
            coordinator.register_query_handler("GetSessionState", lambda q: None)
        await coordinator.publish_event(GetSessionState("abc"))
        unsub()
        await coordinator.publish_event(GetSessionState("def"))
        assert [g.session_id for g in got] == ["abc"]
        assert await coordinator.send_query(GetSessionState("s1")) == {"session": "s1"}


class _Recorder:
    """A dispatch observer that records outcomes."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[str, int]] = []

    def dispatch_start(self, target: Any, envelope: Any) -> None:
        return None

    def attempt_start(self, token: Any, target: Any, attempt: int) -> None:
        return None

    def attempt_end(self, token: Any, attempt_token: Any, error: Any) -> None:
        pass

    def dispatch_end(
        self, token: Any, target: Any, outcome: str, attempts: int, error: Any, duration: float
    ) -> None:
        self.outcomes.append((outcome, attempts))

    def service_changed(self, service: Any, queue_depth: int) -> None:
        pass

    def service_removed(self, service: Any) -> None:
        pass


class TestRemoteDispatch:
    async def test_remote_result_and_remote_termination(self, bus: InMemoryCommBus) -> None:
        class Remote:
            async def dispatch(
                self, target: DispatchTarget, envelope: Envelope, deadline: float
            ) -> Envelope:
                assert deadline > asyncio.get_running_loop().time()
                if envelope.request_id == "bad":
                    envelope.terminate("service 'svc' timed out (remote)")
                    envelope.errors.append({"service": "svc", "outcome": "timeout"})
                else:
                    envelope.outputs["remote"] = True
                return envelope

        c = CommBusCoordinator(None, bus, remote=Remote(), instrument=False)
        rec = _Recorder()
        c.add_observer(rec)
        register(c)  # registered, no local handler: goes to the remote
        ok = await c.dispatch(target(), env("good"))
        assert ok.outputs == {"remote": True} and not ok.terminated
        bad = await c.dispatch(target(), env("bad"))
        assert bad.termination_reason == "service 'svc' timed out (remote)"
        assert len(bad.errors) == 1  # not terminated a second time here
        assert rec.outcomes == [("ok", 1), ("timeout", 1)]

    async def test_attach_and_detach_remote(self, coordinator: CommBusCoordinator) -> None:
        class Remote:
            async def dispatch(
                self, target: DispatchTarget, envelope: Envelope, deadline: float
            ) -> Envelope:
                envelope.outputs["remote"] = True
                return envelope

        register(coordinator)  # no local handler
        first, second = Remote(), Remote()
        assert coordinator.remote is None
        no_remote = await coordinator.dispatch(target(), env())
        assert no_remote.terminated and no_remote.errors[-1]["outcome"] == "no_handler"
        coordinator.attach_remote(first)
        coordinator.attach_remote(first)  # the same one again: no change
        assert coordinator.remote is first
        with pytest.raises(ValueError, match="already attached"):
            coordinator.attach_remote(second)
        assert coordinator.remote is first
        assert (await coordinator.dispatch(target(), env())).outputs == {"remote": True}
        coordinator.detach_remote()
        assert coordinator.remote is None
        coordinator.attach_remote(second)
        assert coordinator.remote is second

    async def test_setting_remote_still_works_with_a_deprecation_warning(
        self, coordinator: CommBusCoordinator
    ) -> None:
        class Remote:
            async def dispatch(
                self, target: DispatchTarget, envelope: Envelope, deadline: float
            ) -> Envelope:
                envelope.outputs["remote"] = True
                return envelope

        register(coordinator)
        remote = Remote()
        with pytest.warns(DeprecationWarning, match="attach_remote"):
            coordinator.remote = remote  # the old way
        assert coordinator.remote is remote
        assert (await coordinator.dispatch(target(), env())).outputs == {"remote": True}
        with pytest.warns(DeprecationWarning):
            coordinator.remote = None
        assert coordinator.remote is None


def test_update_remote_service_notifies_observers(coordinator: CommBusCoordinator) -> None:
    seen: list[tuple[str, int, int, int, bool]] = []

    class Watch(_Recorder):
        def service_changed(self, service: Any, queue_depth: int) -> None:
            seen.append(
                (
                    service.name,
                    service.current_load,
                    service.max_concurrent,
                    queue_depth,
                    service.healthy,
                )
            )

    coordinator.add_observer(Watch())
    register(coordinator, "mirror", metadata={"remote": True})
    assert coordinator.update_remote_service(
        "mirror", current_load=3, max_concurrent=8, queue_depth=2, healthy=False
    )
    assert not coordinator.update_remote_service(
        "ghost", current_load=0, max_concurrent=1, queue_depth=0, healthy=True
    )
    assert seen[-1] == ("mirror", 3, 8, 2, False)
    assert coordinator.list_services(healthy_only=True) == []


async def test_a_change_of_load_alone_goes_to_load_changed(
    coordinator: CommBusCoordinator,
) -> None:
    """A slot taken / given back (queue depth and capacity as last told) calls
    ``load_changed`` when an observer has one, nothing when it says ``observes_load =
    False``, ``service_changed`` otherwise; any other change calls ``service_changed``."""
    calls: dict[str, list[tuple[str, int, int, int]]] = {"fast": [], "full": [], "plain": []}

    def row(service: Any, depth: int) -> tuple[str, int, int, int]:
        return (service.name, service.current_load, depth, service.max_concurrent)

    class Fast(_Recorder):
        def service_changed(self, service: Any, queue_depth: int) -> None:
            calls["full"].append(row(service, queue_depth))

        def load_changed(self, service: Any, queue_depth: int) -> None:
            calls["fast"].append(row(service, queue_depth))

    class Plain(_Recorder):
        def service_changed(self, service: Any, queue_depth: int) -> None:
            calls["plain"].append(row(service, queue_depth))

    class Blind(_Recorder):
        observes_load = False

        def service_changed(self, service: Any, queue_depth: int) -> None:
            calls.setdefault("blind", []).append(row(service, queue_depth))

    for observer in (Fast(), Plain(), Blind()):
        coordinator.add_observer(observer)
    register(coordinator, max_concurrent=1)
    gate = asyncio.Event()
    coordinator.register_handler("svc", gated(gate))
    first = asyncio.create_task(coordinator.dispatch(target(), env()))
    await asyncio.sleep(0)  # holds the one slot
    second = asyncio.create_task(coordinator.dispatch(target(), env("r2")))
    await asyncio.sleep(0)  # queued: the depth changed
    gate.set()
    await asyncio.gather(first, second)
    coordinator.set_service_capacity("svc", 2)  # capacity alone: a full change

    registered = ("svc", 0, 0, 1)
    took, queued, handed_on = ("svc", 1, 0, 1), ("svc", 1, 1, 1), ("svc", 1, 0, 1)
    gave_back, capacity = ("svc", 0, 0, 1), ("svc", 0, 0, 2)
    assert calls["fast"] == [took, gave_back]  # the load alone changed
    assert calls["full"] == [registered, queued, handed_on, capacity]
    assert calls["plain"] == [registered, took, queued, handed_on, gave_back, capacity]
    assert calls["blind"] == [registered, queued, handed_on, capacity]


async def test_a_slot_of_a_replaced_registration_does_not_set_the_new_ones_load() -> None:
    """The same descriptor unregistered and registered again while a dispatch of the old
    registration runs: its end must not overwrite the new registration's load."""
    coordinator = CommBusCoordinator(None, InMemoryCommBus(instrument=False), instrument=False)
    descriptor = ServiceDescriptor(name="svc", service_type="t", max_concurrent=5)
    coordinator.register_service(descriptor)
    first, second = asyncio.Event(), asyncio.Event()
    coordinator.register_handler("svc", gated(first))
    old = asyncio.create_task(coordinator.dispatch(target(), env("a")))
    await asyncio.sleep(0.01)
    coordinator.unregister_service("svc")
    coordinator.register_service(descriptor)  # the same object again
    coordinator.register_handler("svc", gated(second))
    new = asyncio.create_task(coordinator.dispatch(target(), env("b")))
    await asyncio.sleep(0.01)
    assert descriptor.current_load == 1
    first.set()
    await old
    assert descriptor.current_load == 1  # the new registration's dispatch still runs
    second.set()
    await new
    assert descriptor.current_load == 0


async def test_a_change_of_load_alone_goes_to_a_load_log_stamped_with_its_clock(
    coordinator: CommBusCoordinator,
) -> None:
    """An observer with a ``load_log`` gets each slot taken / given back as a ``LoadStep``
    (its clock's time, name, load, queue depth, capacity as last told), not as a
    ``service_changed``; the other changes still go to ``service_changed``. The log's
    ``drain`` is called each time ``pending`` holds ``limit`` steps. Once the service is
    unregistered, its slots given back reach the log no more."""
    steps: list[tuple[float, str, int, int, int]] = []
    full: list[tuple[str, int, int]] = []
    ticks = iter(range(100, 200))
    drained: list[int] = []

    class Logged(_Recorder):
        load_log = LoadLog(
            steps.append, lambda: float(next(ticks)), steps, 2, lambda: drained.append(len(steps))
        )

        def service_changed(self, service: Any, queue_depth: int) -> None:
            full.append((service.name, service.current_load, queue_depth))

    coordinator.add_observer(Logged())
    register(coordinator, max_concurrent=1)
    gate = asyncio.Event()
    coordinator.register_handler("svc", gated(gate))
    first = asyncio.create_task(coordinator.dispatch(target(), env()))
    await asyncio.sleep(0)
    second = asyncio.create_task(coordinator.dispatch(target(), env("r2")))
    await asyncio.sleep(0)  # queued: a full change
    gate.set()
    await asyncio.gather(first, second)
    assert steps == [(100.0, "svc", 1, 0, 1), (101.0, "svc", 0, 0, 1)]
    assert full == [("svc", 0, 0), ("svc", 1, 1), ("svc", 1, 0)]
    assert drained == [2]  # (a list: nothing drains it, so once at 2, then at every step)

    gate.clear()
    running = asyncio.create_task(coordinator.dispatch(target(), env("r3")))
    await asyncio.sleep(0)
    assert steps[-1] == (102.0, "svc", 1, 0, 1) and drained == [2, 3]
    coordinator.unregister_service("svc")
    gate.set()
    await running
    assert len(steps) == 3 and drained == [2, 3]  # the slot given back after: not told


async def test_the_only_observer_may_pass_on_a_dispatch(coordinator: CommBusCoordinator) -> None:
    """An only observer with ``wants_dispatch``: asked before each dispatch; on ``False``
    none of its hooks run for that dispatch, on ``True`` all do; one that raises is
    reported and observes the dispatch. With a second observer it is not asked."""
    asked: list[str] = []
    failures: list[BaseException] = []
    coordinator._dispatcher._observer_failed = lambda obs, exc: failures.append(exc)

    class Choosy(_Recorder):
        def wants_dispatch(self, envelope: Envelope) -> bool:
            rid = envelope.request_context.request_id
            asked.append(rid)
            if rid == "boom":
                raise RuntimeError("asked")
            return rid != "skip"

    async def echo(e: Envelope) -> Envelope:
        return e

    choosy = Choosy()
    coordinator.add_observer(choosy)
    register(coordinator)
    coordinator.register_handler("svc", echo)
    for rid in ("skip", "take", "boom"):
        await coordinator.dispatch(target(), env(rid))
    assert asked == ["skip", "take", "boom"]
    assert len(choosy.outcomes) == 2 and [str(e) for e in failures] == ["asked"]
    other = _Recorder()
    coordinator.add_observer(other)
    await coordinator.dispatch(target(), env("skip"))
    assert asked == ["skip", "take", "boom"]  # two observers: not asked
    assert len(choosy.outcomes) == 3 and len(other.outcomes) == 1


async def test_an_observer_with_a_load_log_of_another_kind_is_added_whole(
    coordinator: CommBusCoordinator,
) -> None:
    """A ``load_log`` attribute that is not a ``LoadLog`` is not one: the observer is added
    and told the registry as any other."""
    told: list[str] = []

    class Other(_Recorder):
        def load_log(self) -> None:  # something else of that name
            return None

        def service_changed(self, service: Any, queue_depth: int) -> None:
            told.append(service.name)

    register(coordinator)
    coordinator.add_observer(Other())
    assert told == ["svc"]
