"""The service registry's load logs: one log alone (its shortcut) and beside other observers
(its general path) tell the same steps, and a failing log is reported, never raised."""

from __future__ import annotations

from typing import Any

import pytest

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.ipc.dispatch.service_registry import ServiceRegistry
from jeeves_control_tower.ipc.telemetry import LoadLog
from jeeves_control_tower.types import (
    DispatchTarget,
    Envelope,
    RequestContext,
    ServiceDescriptor,
)


class Observer:
    """A registry observer told nothing but what its class adds."""

    def dispatch_start(self, target: Any, envelope: Any) -> None:
        return None

    def attempt_start(self, token: Any, target: Any, attempt: int) -> None:
        return None

    def attempt_end(self, token: Any, attempt_token: Any, error: Any) -> None:
        return None

    def dispatch_end(self, *args: Any) -> None:
        return None

    def service_changed(self, service: Any, queue_depth: int) -> None:
        return None

    def service_removed(self, service: Any) -> None:
        return None


def logged(steps: list[Any], drains: list[int] | None = None) -> Observer:
    ticks = iter(range(1_000))
    observer = Observer()
    observer.load_log = LoadLog(  # type: ignore[attr-defined]
        steps.append,
        lambda: float(next(ticks)),
        steps,
        3,
        lambda: drains.append(len(steps)) if drains is not None else None,
    )
    return observer


class Hooked(Observer):
    def __init__(self) -> None:
        self.loads: list[int] = []

    def load_changed(self, service: ServiceDescriptor, queue_depth: int) -> None:
        self.loads.append(service.current_load)


async def echo(envelope: Envelope) -> Envelope:
    return envelope


async def dispatch(coordinator: CommBusCoordinator) -> None:
    envelope = Envelope(request_context=RequestContext(request_id="r", capability="c"))
    result = await coordinator.dispatch(DispatchTarget(service_name="svc", method="m"), envelope)
    assert not result.terminated


def coordinator_with_failures() -> tuple[CommBusCoordinator, list[tuple[Any, BaseException]]]:
    coordinator = CommBusCoordinator(None, InMemoryCommBus(instrument=False), instrument=False)
    failures: list[tuple[Any, BaseException]] = []
    coordinator._registry._on_error = lambda obs, exc: failures.append((obs, exc))
    coordinator.register_service(ServiceDescriptor(name="svc", service_type="t"))
    coordinator.register_handler("svc", echo)
    return coordinator, failures


async def test_one_log_alone_and_beside_a_hook_sees_every_step() -> None:
    coordinator, failures = coordinator_with_failures()
    steps: list[Any] = []
    drains: list[int] = []
    log, hooked = logged(steps, drains), Hooked()
    coordinator.add_observer(log)
    await dispatch(coordinator)  # alone: the shortcut
    assert [s[1:] for s in steps] == [("svc", 1, 0, 10), ("svc", 0, 0, 10)]
    assert [s[0] for s in steps] == [0.0, 1.0]
    coordinator.add_observer(hooked)
    await dispatch(coordinator)  # beside a hook: the general path
    assert [s[2] for s in steps] == [1, 0, 1, 0] and hooked.loads == [1, 0]
    assert drains == [3, 4]  # at its limit, on either path
    coordinator.remove_observer(hooked)
    await dispatch(coordinator)  # alone again
    assert [s[2] for s in steps] == [1, 0, 1, 0, 1, 0] and hooked.loads == [1, 0]
    assert drains == [3, 4, 5, 6]
    coordinator.remove_observer(log)
    await dispatch(coordinator)  # gone: told nothing
    assert len(steps) == 6 and failures == []


class Quiet(Observer):
    """An observer that wants no load steps (so the one log beside it is on the shortcut)."""

    observes_load = False


async def test_the_shortcut_drains_at_the_limit_and_forgets_a_removed_log() -> None:
    coordinator, failures = coordinator_with_failures()
    steps: list[Any] = []
    drains: list[int] = []
    log = logged(steps, drains)
    coordinator.add_observer(Quiet())
    coordinator.add_observer(log)
    await dispatch(coordinator)
    await dispatch(coordinator)
    assert drains == [3, 4]  # from the step that makes ``limit`` (3) wait, not after it
    coordinator.remove_observer(log)
    await dispatch(coordinator)
    assert len(steps) == 4 and failures == []  # removed beside another: told nothing more


async def test_two_logs_each_see_every_step() -> None:
    coordinator, failures = coordinator_with_failures()
    first: list[Any] = []
    second: list[Any] = []
    coordinator.add_observer(logged(first))
    coordinator.add_observer(logged(second))
    await dispatch(coordinator)
    assert [s[2] for s in first] == [s[2] for s in second] == [1, 0] and failures == []


@pytest.mark.parametrize("beside", [False, True], ids=["alone", "beside another observer"])
async def test_a_failing_log_is_reported_with_its_observer_and_the_dispatch_goes_on(
    beside: bool,
) -> None:
    coordinator, failures = coordinator_with_failures()

    def broken(step: Any) -> None:
        raise RuntimeError("log full")

    observer = Observer()
    observer.load_log = LoadLog(broken, lambda: 0.0, [], 3, lambda: None)  # type: ignore[attr-defined]
    if beside:  # the one reported is the failing log's observer, not the first one
        coordinator.add_observer(Quiet())
    coordinator.add_observer(observer)
    await dispatch(coordinator)
    assert [(obs, str(exc)) for obs, exc in failures] == [(observer, "log full")] * 2
    registry: ServiceRegistry = coordinator._registry
    assert registry.get("svc") is not None and registry.get("svc").current_load == 0  # type: ignore[union-attr]
