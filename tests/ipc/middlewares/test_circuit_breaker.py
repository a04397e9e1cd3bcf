from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.ipc.middlewares import CircuitBreakerMiddleware, CircuitOpenError


@dataclass
class Ask:
    fail: bool = False


@dataclass
class Health:
    pass


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(clock: Clock) -> CircuitBreakerMiddleware:
    return CircuitBreakerMiddleware(
        failure_threshold=2, reset_timeout=10, excluded_types=["Health"], clock=clock
    )


@pytest.fixture
def cbus(breaker: CircuitBreakerMiddleware) -> InMemoryCommBus:
    bus = InMemoryCommBus(instrument=False)
    bus.add_middleware(breaker)
    calls: list[Any] = []

    async def ask(q: Ask) -> str:
        calls.append(q)
        await asyncio.sleep(0)
        if q.fail:
            raise RuntimeError("down")
        return "ok"

    bus.register_handler("Ask", ask)
    bus.register_handler("Health", lambda q: (_ for _ in ()).throw(RuntimeError("sick")))
    bus.calls = calls  # type: ignore[attr-defined]
    return bus


async def test_opens_after_threshold_and_fails_fast(
    cbus: InMemoryCommBus, breaker: CircuitBreakerMiddleware
) -> None:
    for _ in range(2):
        with pytest.raises(RuntimeError, match="down"):
            await cbus.query(Ask(fail=True))
    assert breaker.state("Ask") == "open"
    with pytest.raises(CircuitOpenError, match="circuit open for 'Ask'"):
        await cbus.query(Ask())
    assert len(cbus.calls) == 2  # type: ignore[attr-defined]


async def test_a_cancelled_caller_is_not_a_handler_failure(
    cbus: InMemoryCommBus, breaker: CircuitBreakerMiddleware
) -> None:
    for _ in range(3):  # more than failure_threshold
        task = asyncio.ensure_future(cbus.query(Ask()))
        await asyncio.sleep(0)  # the handler is inside its first await
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert breaker.state("Ask") == "closed"
    assert await cbus.query(Ask()) == "ok"


async def test_success_resets_count(
    cbus: InMemoryCommBus, breaker: CircuitBreakerMiddleware
) -> None:
    with pytest.raises(RuntimeError):
        await cbus.query(Ask(fail=True))
    assert await cbus.query(Ask()) == "ok"
    with pytest.raises(RuntimeError):
        await cbus.query(Ask(fail=True))
    assert breaker.state("Ask") == "closed"


async def test_half_open_probe(
    cbus: InMemoryCommBus, breaker: CircuitBreakerMiddleware, clock: Clock
) -> None:
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await cbus.query(Ask(fail=True))
    clock.now += 10
    assert breaker.state("Ask") == "half_open"
    # a failing probe reopens at once
    with pytest.raises(RuntimeError):
        await cbus.query(Ask(fail=True))
    assert breaker.state("Ask") == "open"
    clock.now += 10
    # only one probe at a time: a concurrent second message fails fast
    probe = asyncio.create_task(cbus.query(Ask()))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpenError):
        await cbus.query(Ask())
    assert await probe == "ok"
    assert breaker.state("Ask") == "closed"


async def test_excluded_types_never_break(
    cbus: InMemoryCommBus, breaker: CircuitBreakerMiddleware
) -> None:
    for _ in range(5):
        with pytest.raises(RuntimeError, match="sick"):
            await cbus.query(Health())
    assert breaker.state("Health") == "closed"


async def test_open_circuit_on_send_is_logged_not_raised(
    cbus: InMemoryCommBus, breaker: CircuitBreakerMiddleware
) -> None:
    for _ in range(2):
        await cbus.send(Ask(fail=True))
    assert breaker.state("Ask") == "open"
    await cbus.send(Ask())  # fails fast, logged
    assert len(cbus.calls) == 2  # type: ignore[attr-defined]


def test_validation() -> None:
    with pytest.raises(ValueError):
        CircuitBreakerMiddleware(failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreakerMiddleware(reset_timeout=0)
