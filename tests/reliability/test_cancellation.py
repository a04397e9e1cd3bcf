"""Cancelling a caller at any await point leaks no task, timer, slot or queue entry."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import pytest

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus, RetryPolicy
from jeeves_control_tower.logging import NullLogger
from jeeves_control_tower.types import DispatchTarget, Envelope, RequestContext, ServiceDescriptor


@dataclass
class Ev:
    n: int = 0


@dataclass
class Q:
    n: int = 0


async def _steps(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def _leftover_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]


def _armed_timers() -> int:
    loop = asyncio.get_running_loop()
    scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
    return sum(1 for h in scheduled if not h.cancelled())


async def _cancel_after(coro: Any, iterations: int) -> None:
    task = asyncio.ensure_future(coro)
    await _steps(iterations)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await _steps(3)


@pytest.mark.parametrize("iterations", range(0, 12))
async def test_publish(iterations: int) -> None:
    bus = InMemoryCommBus(instrument=False)

    async def slow(_: Ev) -> None:
        await _steps(5)

    bus.subscribe("Ev", slow)
    bus.subscribe("Ev", slow)
    bus.subscribe("Ev", lambda e: None)
    await _cancel_after(bus.publish(Ev()), iterations)
    assert _leftover_tasks() == []
    assert _armed_timers() == 0


@pytest.mark.parametrize("iterations", range(0, 12))
async def test_query(iterations: int) -> None:
    bus = InMemoryCommBus(instrument=False, query_timeout=30)

    async def slow(_: Q) -> int:
        await _steps(5)
        return 1

    bus.register_handler("Q", slow)
    await _cancel_after(bus.query(Q()), iterations)
    assert _leftover_tasks() == []
    assert _armed_timers() == 0


@pytest.mark.parametrize("iterations", range(0, 16))
async def test_dispatch_with_queue_and_retries(iterations: int) -> None:
    bus = InMemoryCommBus(instrument=False)
    coord = CommBusCoordinator(
        NullLogger(),
        bus,
        retry_policy=RetryPolicy(initial_delay=0.0, max_delay=0.0),
        instrument=False,
    )
    svc = ServiceDescriptor(name="s", service_type="worker", max_concurrent=1)
    coord.register_service(svc)
    calls = 0

    async def handler(e: Envelope) -> Envelope:
        nonlocal calls
        calls += 1
        await _steps(2)
        if calls % 2:
            raise RuntimeError("retry me")
        return e

    coord.register_handler("s", handler)

    def env(i: int) -> Envelope:
        return Envelope(request_context=RequestContext(request_id=str(i), capability="c"))

    target = DispatchTarget(service_name="s", method="m", timeout_seconds=30)
    others = [asyncio.ensure_future(coord.dispatch(target, env(i))) for i in range(3)]
    await _cancel_after(coord.dispatch(target, env(99)), iterations)
    results = await asyncio.gather(*others)
    assert all(isinstance(r, Envelope) for r in results)
    assert svc.current_load == 0 and coord.queue_depth("s") == 0
    assert _leftover_tasks() == []
    assert _armed_timers() == 0
