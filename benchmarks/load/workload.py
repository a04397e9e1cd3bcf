"""The workload of one target: the producers, the consumer-side handlers and services, and
the bookkeeping that accounts for every message (loss, duplicates, order)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.types import (
    DispatchTarget,
    Envelope,
    RequestContext,
    ServiceDescriptor,
)

from .measure import Histogram, PatternStats
from .messages import LoadCommand, LoadEvent, LoadQuery
from .settings import DISPATCH_TIMEOUT, PATTERNS, PRIORITIES, QUERY_TIMEOUT, SERVICES, STALL_TIMEOUT


class Load:
    """The state of one target's run: counters, handlers and the producers."""

    def __init__(self, producers: int, subscribers: int, window: int) -> None:
        self.producers = producers
        self.subscribers = subscribers
        self.window = window
        self.stats = {p: PatternStats() for p in PATTERNS}
        self.measuring = False
        self.stop = False
        self.seq = {p: [0] * producers for p in PATTERNS}
        # deliveries expected (publish: x subscribers) and seen, over the whole run
        self.expected = dict.fromkeys(PATTERNS, 0)
        self.handled = dict.fromkeys(PATTERNS, 0)
        self.next_seq: dict[tuple[str, int, int], int] = {}
        self.gaps = dict.fromkeys(PATTERNS, 0)
        self.out_of_order = dict.fromkeys(PATTERNS, 0)
        self.outstanding = [0] * producers
        self.wake = [asyncio.Event() for _ in range(producers)]
        self.all_drained = asyncio.Event()
        self.active = {name: 0 for name, *_ in SERVICES}
        self.peak = {name: 0 for name, *_ in SERVICES}
        self.by_priority = {p.value: Histogram() for p in PRIORITIES}
        self.hung = 0  # producers still inside a call long after the stop

    # ---- consumer side

    def arrived(self, pattern: str, producer: int, sub: int, seq: int) -> None:
        """A handler started on message ``seq`` of ``producer``: check the per-producer
        order (publish: per subscriber) and count it."""
        key = (pattern, producer, sub)
        want = self.next_seq.get(key, 0)
        if seq == want:
            self.next_seq[key] = seq + 1
        elif seq > want:
            self.gaps[pattern] += seq - want
            self.next_seq[key] = seq + 1
        else:
            self.out_of_order[pattern] += 1
        self.handled[pattern] += 1

    def finished(self, pattern: str, producer: int, ts: float) -> None:
        if self.measuring:
            self.stats[pattern].e2e.add(time.perf_counter() - ts)
        self.outstanding[producer] -= 1
        if self.outstanding[producer] < self.window:
            self.wake[producer].set()
        if self.stop and self.drained():
            self.all_drained.set()

    def subscriber(self, sub: int) -> Callable[[LoadEvent], Awaitable[None]]:
        async def on_event(event: LoadEvent) -> None:
            self.arrived("publish", event.producer, sub, event.seq)
            if event.seq % 8 == sub:
                await asyncio.sleep(0)
            if event.seq % 256 == 0:
                await asyncio.sleep(0.0005)
            self.finished("publish", event.producer, event.ts)

        return on_event

    async def on_command(self, command: LoadCommand) -> None:
        self.arrived("send", command.producer, 0, command.seq)
        if command.seq % 4 == 0:
            await asyncio.sleep(0)
        if command.seq % 128 == 0:
            await asyncio.sleep(0.001)
        self.finished("send", command.producer, command.ts)

    async def on_query(self, query: LoadQuery) -> int:
        self.handled["query"] += 1
        if query.seq % 4 == 1:
            await asyncio.sleep(0)
        if query.seq % 128 == 1:
            await asyncio.sleep(0.0005)
        return query.seq * 2 + 1

    def service_handler(
        self, name: str, capacity: int, suspend_every: int, sleep_every: int
    ) -> Callable[[Envelope], Awaitable[Envelope]]:
        async def handle(envelope: Envelope) -> Envelope:
            self.handled["dispatch"] += 1
            self.active[name] += 1
            if self.active[name] > self.peak[name]:
                self.peak[name] = self.active[name]
            try:
                n = int(envelope.metadata.get("seq", 0))
                if n % suspend_every == 0:
                    await asyncio.sleep(0)
                if sleep_every and n % sleep_every == 0:
                    await asyncio.sleep(0.0005)
                envelope.outputs["seq"] = n
                envelope.outputs["by"] = name
                return envelope
            finally:
                self.active[name] -= 1

        return handle

    def register(self, bus: InMemoryCommBus, coordinator: CommBusCoordinator) -> None:
        """The consumer side: subscribers, handlers, services."""
        for sub in range(self.subscribers):
            bus.subscribe("LoadEvent", self.subscriber(sub))
        bus.register_handler("LoadCommand", self.on_command)
        bus.register_handler("LoadQuery", self.on_query)
        for name, capacity, suspend_every, sleep_every in SERVICES:
            coordinator.register_service(
                ServiceDescriptor(name=name, service_type="load", max_concurrent=capacity)
            )
            coordinator.register_handler(
                name, self.service_handler(name, capacity, suspend_every, sleep_every)
            )

    # ---- producer side

    async def _room(self, p: int) -> None:
        """Wait until producer ``p`` has fewer than ``window`` deliveries outstanding."""
        while self.outstanding[p] >= self.window:
            self.wake[p].clear()
            await asyncio.wait_for(self.wake[p].wait(), STALL_TIMEOUT)

    async def producer(self, p: int, bus: InMemoryCommBus, coordinator: CommBusCoordinator) -> None:
        i = p
        while not self.stop:
            pattern = PATTERNS[i % len(PATTERNS)]
            i += 1
            stats = self.stats[pattern]
            seq = self.seq[pattern][p]
            self.seq[pattern][p] = seq + 1
            if pattern in ("publish", "send"):
                try:
                    await self._room(p)
                except TimeoutError:
                    stats.errors["stalled"] += 1  # deliveries stopped arriving: give up
                    return
            start = time.perf_counter()
            try:
                if pattern == "publish":
                    self.outstanding[p] += self.subscribers
                    self.expected["publish"] += self.subscribers
                    await bus.publish(LoadEvent(p, seq, start))
                elif pattern == "send":
                    self.outstanding[p] += 1
                    self.expected["send"] += 1
                    await bus.send(LoadCommand(p, seq, start))
                elif pattern == "query":
                    result = await bus.query(LoadQuery(p, seq, start), timeout=QUERY_TIMEOUT)
                    if result != seq * 2 + 1:
                        stats.errors["wrong_result"] += 1
                        continue
                    self.expected["query"] += 1
                else:
                    if not await self._dispatch(p, seq, coordinator, start):
                        continue
            except TimeoutError:
                stats.errors["timeout"] += 1
                self._not_sent(pattern, p)
                continue
            except Exception as exc:
                stats.errors[f"exception:{type(exc).__name__}"] += 1
                self._not_sent(pattern, p)
                continue
            elapsed = time.perf_counter() - start
            stats.ops_total += 1
            if self.measuring:
                stats.ops += 1
                stats.call.add(elapsed)
                if pattern in ("query", "dispatch"):
                    stats.e2e.add(elapsed)

    def _not_sent(self, pattern: str, p: int) -> None:
        """A publish/send that raised did not leave: do not wait for it."""
        n = self.subscribers if pattern == "publish" else 1 if pattern == "send" else 0
        self.outstanding[p] -= n
        self.expected[pattern] -= n

    async def _dispatch(
        self, p: int, seq: int, coordinator: CommBusCoordinator, start: float
    ) -> bool:
        name = SERVICES[seq % len(SERVICES)][0]
        priority = PRIORITIES[(seq // len(SERVICES)) % len(PRIORITIES)]
        envelope = Envelope(
            request_context=RequestContext(request_id=f"p{p}-{seq}", capability="load"),
            metadata={"seq": seq},
        )
        target = DispatchTarget(
            service_name=name, method="run", priority=priority, timeout_seconds=DISPATCH_TIMEOUT
        )
        result = await coordinator.dispatch(target, envelope)
        stats = self.stats["dispatch"]
        if result.terminated:
            reason = result.termination_reason or "?"
            kind = "timeout" if "timed out" in reason else "terminated"
            stats.errors[kind] += 1
            return False
        if result.outputs.get("seq") != seq or result.outputs.get("by") != name:
            stats.errors["wrong_result"] += 1
            return False
        self.expected["dispatch"] += 1
        if self.measuring:
            self.by_priority[priority.value].add(time.perf_counter() - start)
        return True

    def drained(self) -> bool:
        return all(self.handled[p] >= self.expected[p] for p in ("publish", "send"))
