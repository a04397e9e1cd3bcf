"""The demo's traffic: Poisson arrivals of a weighted mix of operations.

Every pattern shows up: dispatches with mixed priorities (some retried, some timing out,
some refused by an unhealthy service), queries (a few time out or fail), commands, events
fanned out to several subscribers, and a service whose health flaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..types import DispatchTarget, SchedulingPriority
from .messages import GetQuota, InvalidateCache, SearchMemory, SendNotification
from .services import new_envelope
from .wiring import DemoServices

__all__ = ["HealthFlapper", "Workload"]

P = SchedulingPriority


@dataclass(frozen=True)
class _Dispatch:
    service: str
    method: str
    priorities: tuple[SchedulingPriority, ...]
    timeout: float
    retries: int


_DISPATCHES = {
    "pipeline": _Dispatch("flow_service", "execute_pipeline", (P.HIGH, P.NORMAL, P.LOW), 4.0, 1),
    "summarize": _Dispatch("summarizer", "summarize", (P.NORMAL, P.LOW, P.IDLE), 1.0, 0),
    "charge": _Dispatch("billing", "charge", (P.REALTIME, P.HIGH), 2.0, 2),
    "store": _Dispatch("memory", "store", (P.NORMAL, P.HIGH), 1.0, 1),
    "reindex": _Dispatch("indexer", "reindex", (P.IDLE, P.LOW), 3.0, 0),
}  # fmt: skip

#: Relative frequency of each operation.
WEIGHTS = {
    "pipeline": 18,
    "summarize": 12,
    "charge": 10,
    "store": 12,
    "reindex": 6,
    "search": 12,
    "quota": 10,
    "notify": 8,
    "invalidate": 6,
    "activity": 8,
}


class Workload:
    """Starts operations at ``rate`` per second until stopped.

    At most ``max_inflight`` operations run at once; arrivals beyond that are counted in
    ``dropped`` rather than queued, so memory stays bounded at any rate.
    """

    def __init__(
        self,
        services: DemoServices,
        rng: random.Random,
        rate: float = 20.0,
        max_inflight: int = 500,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate!r}")
        self.services = services
        self.coordinator = services.coordinator
        self.bus = services.coordinator.commbus
        self.rng = rng
        self.rate = rate
        self.max_inflight = max_inflight
        self.started: Counter[str] = Counter()
        self.dropped = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._kinds = list(WEIGHTS)
        self._weights = [WEIGHTS[k] for k in self._kinds]
        self._ops: dict[str, Callable[[], Awaitable[object]]] = {
            "search": self._search,
            "quota": self._quota,
            "notify": self._notify,
            "invalidate": self._invalidate,
            "activity": self._activity,
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Generate traffic until ``stop`` is set, then wait briefly for what is running."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.expovariate(self.rate))
                break
            self.fire(self.rng.choices(self._kinds, self._weights)[0])
        await self.drain()

    def fire(self, kind: str) -> None:
        """Start one operation of ``kind`` in the background."""
        if len(self._tasks) >= self.max_inflight:
            self.dropped += 1
            return
        self.started[kind] += 1
        task = asyncio.ensure_future(self._run_op(kind))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, grace: float = 1.5) -> None:
        """Wait up to ``grace`` seconds for running operations, then cancel the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _run_op(self, kind: str) -> None:
        # Every failure the demo provokes is already recorded by the bus and coordinator;
        # the workload itself must keep going whatever an operation does.
        with contextlib.suppress(Exception):
            spec = _DISPATCHES.get(kind)
            if spec is not None:
                await self._dispatch(spec)
            else:
                await self._ops[kind]()

    async def _dispatch(self, spec: _Dispatch) -> None:
        session = f"s{self.rng.randint(1, 40)}"
        target = DispatchTarget(
            spec.service,
            spec.method,
            priority=self.rng.choice(spec.priorities),
            timeout_seconds=spec.timeout,
            max_retries=spec.retries,
        )
        await self.coordinator.dispatch(target, new_envelope(spec.method, spec.method, session))

    async def _search(self) -> object:
        return await self.bus.query(SearchMemory(self.rng.choice(["tea", "rota", "invoice"])), 1.0)

    async def _quota(self) -> object:
        return await self.bus.query(GetQuota(f"u{self.rng.randint(1, 50)}"), timeout=0.3)

    async def _notify(self) -> None:
        await self.bus.send(SendNotification(f"u{self.rng.randint(1, 50)}", "Your report is ready"))

    async def _invalidate(self) -> None:
        await self.bus.send(InvalidateCache(f"s{self.rng.randint(1, 40)}"))

    async def _activity(self) -> None:
        await self.coordinator.broadcast("UserActivity", {"user": f"u{self.rng.randint(1, 50)}"})


class HealthFlapper:
    """Takes ``service`` down for ``down`` seconds in every ``period`` seconds."""

    def __init__(
        self,
        services: DemoServices,
        service: str = "billing",
        period: float = 30.0,
        down: float = 6.0,
    ) -> None:
        if not 0 < down < period:
            raise ValueError("HealthFlapper needs 0 < down < period")
        self.services = services
        self.service = service
        self.period = period
        self.down = down
        self.transitions = 0

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not await _wait(stop, self.period - self.down):
                await self.services.set_health(self.service, False)
                self.transitions += 1
                stopped = await _wait(stop, self.down)
                await self.services.set_health(self.service, True)
                self.transitions += 1
                if stopped:
                    return
        finally:
            self.services.coordinator.set_service_health(self.service, True)


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop``; ``True`` when stopped."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True
