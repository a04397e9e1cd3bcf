"""Shared fixtures: a fresh, uninstrumented bus and coordinator per test.

Telemetry has its own tests (tests/observability); the core tests run without it so they
exercise the bare bus."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus, reset_commbus
from jeeves_control_tower.ipc.retry import RetryPolicy
from jeeves_control_tower.logging import NullLogger


@pytest.fixture(autouse=True)
def _fresh_global_bus() -> Iterator[None]:
    reset_commbus()
    yield
    reset_commbus()


@pytest.fixture
def bus() -> InMemoryCommBus:
    return InMemoryCommBus(query_timeout=5.0, instrument=False)


@pytest.fixture
def coordinator(bus: InMemoryCommBus) -> CommBusCoordinator:
    return CommBusCoordinator(
        NullLogger(),
        bus,
        retry_policy=RetryPolicy(initial_delay=0.001, max_delay=0.01, jitter_floor=1.0),
        instrument=False,
    )
