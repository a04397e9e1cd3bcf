from __future__ import annotations

from dataclasses import dataclass

import pytest

from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.ipc.middlewares import DedupeMiddleware


@dataclass
class Job:
    n: int


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def deliver(bus: InMemoryCommBus, n: int, mid: str, pattern: str = "send") -> str:
    outcome, _ = await bus.deliver_incoming(pattern, Job(n), message_id=mid)
    return outcome


Setup = tuple[InMemoryCommBus, DedupeMiddleware, "Clock"]


@pytest.fixture
def handled() -> list[int]:
    return []


@pytest.fixture
def setup(bus: InMemoryCommBus, handled: list[int]) -> Setup:
    clock = Clock()
    dedupe = DedupeMiddleware(max_entries=3, ttl=10, clock=clock)
    bus.add_middleware(dedupe)
    bus.register_handler("Job", lambda job: handled.append(job.n))
    return bus, dedupe, clock


async def test_a_redelivered_command_is_handled_once(setup: Setup, handled: list[int]) -> None:
    bus, dedupe, _ = setup
    assert await deliver(bus, 1, "a") == "ok"
    assert await deliver(bus, 2, "a") == "aborted"
    assert await deliver(bus, 3, "b") == "ok"
    assert handled == [1, 3]
    assert dedupe.duplicates == 1


async def test_only_incoming_sends_are_deduplicated(setup: Setup, handled: list[int]) -> None:
    bus, _, _ = setup
    await bus.send(Job(1))
    await bus.send(Job(2))  # local sends: direction "local", never deduplicated
    await deliver(bus, 3, "q", pattern="query")
    await deliver(bus, 4, "q", pattern="query")
    assert handled == [1, 2, 3, 4]


async def test_memory_is_bounded_by_size_and_ttl(setup: Setup, handled: list[int]) -> None:
    bus, dedupe, clock = setup
    for i, mid in enumerate("abcd"):
        await deliver(bus, i, mid)
    assert len(dedupe) == 3 and not dedupe.seen("a")  # evicted: oldest first
    assert await deliver(bus, 9, "a") == "ok"
    clock.now = 11.0
    assert await deliver(bus, 10, "b") == "ok"  # forgotten after ttl
    assert len(dedupe) <= 3


async def test_failed_handling_is_forgotten_so_a_redelivery_retries(bus: InMemoryCommBus) -> None:
    attempts: list[int] = []

    def flaky(job: Job) -> None:
        attempts.append(job.n)
        if len(attempts) == 1:
            raise RuntimeError("first try fails")

    bus.add_middleware(DedupeMiddleware())
    bus.register_handler("Job", flaky)
    await deliver(bus, 1, "x")
    await deliver(bus, 2, "x")
    await deliver(bus, 3, "x")
    assert attempts == [1, 2]


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        DedupeMiddleware(max_entries=0)
    with pytest.raises(ValueError):
        DedupeMiddleware(ttl=0)
