"""current_attempt() for handlers that ask for it, and AttemptFailed steering retries."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jeeves_control_tower.ipc import CommBusCoordinator
from jeeves_control_tower.ipc.dispatch import AttemptFailed, DispatchAttempt, current_attempt
from jeeves_control_tower.types import DispatchTarget, Envelope, RequestContext, ServiceDescriptor


def env() -> Envelope:
    return Envelope(request_context=RequestContext(request_id="r", capability="c"))


class Aware:
    wants_dispatch_attempt = True

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.seen: list[DispatchAttempt | None] = []

    async def __call__(self, e: Envelope) -> Envelope:
        self.seen.append(current_attempt())
        await asyncio.sleep(0)
        if self.failures:
            raise self.failures.pop(0)
        return e


def register(c: CommBusCoordinator, handler: Any) -> None:
    c.register_service(ServiceDescriptor(name="s", service_type="worker"))
    c.register_handler("s", handler)


@pytest.mark.parametrize("observed", [False, True])
async def test_aware_handler_sees_its_attempt(
    coordinator: CommBusCoordinator, observed: bool
) -> None:
    if observed:
        from jeeves_control_tower.ipc.dispatch import WholeDispatchObserver

        class Quiet(WholeDispatchObserver):
            def dispatch_start(self, target: Any, envelope: Any) -> None:
                return None

            def dispatch_end(self, *args: Any) -> None:
                return None

            def service_registered(self, *args: Any) -> None:
                return None

            def service_unregistered(self, *args: Any) -> None:
                return None

        coordinator.add_observer(Quiet())  # type: ignore[arg-type]
    handler = Aware(RuntimeError("once"))
    register(coordinator, handler)
    t = DispatchTarget("s", "m", timeout_seconds=7)
    loop = asyncio.get_running_loop()
    out = await coordinator.dispatch(t, env())
    assert not out.terminated
    first, second = handler.seen
    assert first is not None and second is not None
    assert (first.target, first.attempt, second.attempt) == (t, 1, 2)
    assert 6 < first.remaining() <= 7 and first.deadline <= loop.time() + 7
    assert current_attempt() is None  # not leaked into the caller


async def test_plain_handler_sees_none(coordinator: CommBusCoordinator) -> None:
    seen = []

    async def plain(e: Envelope) -> Envelope:
        seen.append(current_attempt())
        return e

    register(coordinator, plain)
    await coordinator.dispatch(DispatchTarget("s", "m"), env())
    assert seen == [None]


async def test_not_retryable_ends_at_once(coordinator: CommBusCoordinator) -> None:
    handler = Aware(AttemptFailed("bad request", retryable=False))
    register(coordinator, handler)
    out = await coordinator.dispatch(DispatchTarget("s", "m", max_retries=3), env())
    assert out.terminated and len(handler.seen) == 1
    assert "not retryable" in (out.termination_reason or "")
    assert "bad request" in (out.termination_reason or "")


async def test_retry_after_that_misses_the_deadline_ends(coordinator: CommBusCoordinator) -> None:
    handler = Aware(AttemptFailed("busy", retry_after=5.0))
    register(coordinator, handler)
    out = await coordinator.dispatch(DispatchTarget("s", "m", timeout_seconds=1), env())
    assert out.terminated and "no time left" in (out.termination_reason or "")
    assert len(handler.seen) == 1


async def test_retry_after_that_fits_is_waited(coordinator: CommBusCoordinator) -> None:
    handler = Aware(AttemptFailed("busy", retry_after=0.2))
    register(coordinator, handler)
    loop = asyncio.get_running_loop()
    began = loop.time()
    out = await coordinator.dispatch(DispatchTarget("s", "m"), env())
    assert not out.terminated and loop.time() - began >= 0.19
