"""The demo's services: what each one is, what it handles, and how it misbehaves.

Every service is a small class whose bound methods are the handlers, so the flow feed and
the traces name them readably (``Indexer.on_memory_stored``). Latency and failures come
from one seeded :class:`Behaviour`, so a run is reproducible given its seed.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..ipc import CommBusCoordinator, InMemoryCommBus
from ..types import DispatchTarget, Envelope, RequestContext, SchedulingPriority, ServiceDescriptor
from .messages import (
    GetQuota,
    GetSessionState,
    InvalidateCache,
    MemoryStored,
    PipelineCompleted,
    RecordUsage,
    SearchMemory,
    SendNotification,
)

__all__ = [
    "Audit",
    "Behaviour",
    "Billing",
    "Embedder",
    "FlowService",
    "Indexer",
    "Memory",
    "Notifications",
    "Planner",
    "ServiceBase",
    "Summarizer",
    "TransientBackendError",
    "new_envelope",
]


class TransientBackendError(RuntimeError):
    """A backend hiccup; a retry usually succeeds."""


class IndexCorruptedError(RuntimeError):
    """A search hit a damaged index segment."""


class IndexLockedError(RuntimeError):
    """A reindex found the index locked; the workload does not retry these."""


class StepFailedError(RuntimeError):
    """A pipeline step ended without a result."""


class DeliveryError(RuntimeError):
    """The notification provider refused a message."""


@dataclass
class Behaviour:
    """Seeded latency and failure draws; ``latency_scale`` stretches every pause."""

    rng: random.Random
    latency_scale: float = 1.0

    async def pause(self, low_ms: float, high_ms: float) -> None:
        await asyncio.sleep(self.rng.uniform(low_ms, high_ms) * self.latency_scale / 1000.0)

    def chance(self, probability: float) -> bool:
        return self.rng.random() < probability


def new_envelope(capability: str, method: str, session_id: str | None = None) -> Envelope:
    """A fresh request envelope whose metadata names the ``method`` to run."""
    ctx = RequestContext(request_id=uuid.uuid4().hex, capability=capability, session_id=session_id)
    return Envelope(request_context=ctx, metadata={"method": method})


Handler = Callable[[Envelope], Awaitable[Envelope]]


class ServiceBase:
    """One demo service: its descriptor plus a method table for dispatch."""

    descriptor: ServiceDescriptor

    def __init__(self, env: Behaviour, coordinator: CommBusCoordinator) -> None:
        self.env = env
        self.coordinator = coordinator
        self.bus: InMemoryCommBus = coordinator.commbus
        self.methods: dict[str, Handler] = {}

    async def handle(self, envelope: Envelope) -> Envelope:
        method = str(envelope.metadata.get("method", ""))
        handler = self.methods.get(method)
        if handler is None:
            raise LookupError(f"{self.descriptor.name} has no method {method!r}")
        return await handler(envelope)


class FlowService(ServiceBase):
    """Runs a pipeline: reads session state, plans, embeds, then announces and bills."""

    def __init__(self, env: Behaviour, coordinator: CommBusCoordinator) -> None:
        super().__init__(env, coordinator)
        self.descriptor = ServiceDescriptor(
            "flow_service", "flow", "2.3.0", ["execute_pipeline"], max_concurrent=8
        )
        self.methods = {"execute_pipeline": self.execute_pipeline}

    async def execute_pipeline(self, envelope: Envelope) -> Envelope:
        session = envelope.session_id or "anonymous"
        state = await self.bus.query(GetSessionState(session), timeout=1.0)
        for service, method, retries in (("planner", "plan", 1), ("embedder", "embed", 3)):
            step = await self.coordinator.dispatch(
                DispatchTarget(service, method, SchedulingPriority.HIGH, 2.0, max_retries=retries),
                new_envelope(method, method, session),
            )
            if step.terminated:
                raise StepFailedError(f"{service}.{method}: {step.termination_reason}")
        await self.bus.publish(PipelineCompleted(session, steps=2))
        await self.bus.send(RecordUsage(session, tokens=self.env.rng.randint(50, 900)))
        envelope.outputs["pipeline"] = {"turn": state.get("turn", 0), "steps": 2}
        return envelope


class Planner(ServiceBase):
    def __init__(self, env: Behaviour, coordinator: CommBusCoordinator) -> None:
        super().__init__(env, coordinator)
        self.descriptor = ServiceDescriptor("planner", "flow", "1.1.0", ["plan"], max_concurrent=4)
        self.methods = {"plan": self.plan}

    async def plan(self, envelope: Envelope) -> Envelope:
        await self.env.pause(10, 60)
        if self.env.chance(0.03):
            raise TransientBackendError("planner model returned an empty plan")
        envelope.outputs["plan"] = ["retrieve", "embed"]
        return envelope


class Embedder(ServiceBase):
    def __init__(self, env: Behaviour, coordinator: CommBusCoordinator) -> None:
        super().__init__(env, coordinator)
        self.descriptor = ServiceDescriptor(
            "embedder", "worker", "0.9.4", ["embed"], max_concurrent=6
        )
        self.methods = {"embed": self.embed}

    async def embed(self, envelope: Envelope) -> Envelope:
        await self.env.pause(5, 30)
        if self.env.chance(0.12):
            raise TransientBackendError("GPU worker busy")
        envelope.outputs["vector_dims"] = 768
        return envelope


class Summarizer(ServiceBase):
    """Slow and occasionally stuck: its dispatches are the demo's timeouts."""

    def __init__(self, env: Behaviour, coordinator: CommBusCoordinator) -> None:
        super().__init__(env, coordinator)
        self.descriptor = ServiceDescriptor(
            "summarizer", "worker", "3.0.1", ["summarize"], max_concurrent=3
        )
        self.methods = {"summarize": self.summarize}

    async def summarize(self, envelope: Envelope) -> Envelope:
        if self.env.chance(0.08):
            await asyncio.sleep(5.0)  # stuck: the caller's deadline fires first
        await self.env.pause(40, 250)
        envelope.outputs["summary_chars"] = self.env.rng.randint(80, 400)
        return envelope


class Indexer(ServiceBase):
    def __init__(self, env: Behaviour, coordinator: CommBusCoordinator) -> None:
        super().__init__(env, coordinator)
        self.descriptor = ServiceDescriptor(
            "indexer", "worker", "1.7.0", ["reindex", "index"], max_concurrent=4
        )
        self.methods = {"reindex": self.reindex}
        self.indexed = 0

    async def reindex(self, envelope: Envelope) -> Envelope:
        await self.env.pause(30, 120)
        if self.env.chance(0.15):
            raise IndexLockedError("another reindex holds the segment lock")
        envelope.outputs["segments"] = self.env.rng.randint(1, 12)
        return envelope

    async def on_memory_stored(self, event: MemoryStored) -> None:
        await self.env.pause(1, 8)
        self.indexed += 1


class Memory(ServiceBase):
    """The memory vertical: stores items (announcing them) and answers lookups."""

    def __init__(self, env: Behaviour, coordinator: CommBusCoordinator) -> None:
        super().__init__(env, coordinator)
        self.descriptor = ServiceDescriptor(
            "memory", "vertical", "4.2.0", ["store", "search", "session_state"], max_concurrent=10
        )
        self.methods = {"store": self.store}
        self.turns: dict[str, int] = {}

    async def store(self, envelope: Envelope) -> Envelope:
        await self.env.pause(2, 10)
        item = uuid.uuid4().hex[:12]
        await self.bus.publish(MemoryStored(item, self.env.rng.choice(["L1", "L2", "L3"])))
        envelope.outputs["item_id"] = item
        return envelope

    async def session_state(self, query: GetSessionState) -> dict[str, Any]:
        await self.env.pause(1, 5)
        turn = self.turns[query.session_id] = self.turns.get(query.session_id, 0) + 1
        return {"session_id": query.session_id, "turn": turn}

    async def search(self, query: SearchMemory) -> list[str]:
        await self.env.pause(5, 40)
        if self.env.chance(0.04):
            raise IndexCorruptedError("segment 7 failed its checksum")
        return [uuid.uuid4().hex[:12] for _ in range(min(query.limit, 5))]

    def invalidate(self, command: InvalidateCache) -> None:
        self.turns.pop(command.key, None)


class Billing(ServiceBase):
    """Small capacity (so its queue fills) and the service that flaps unhealthy."""

    def __init__(self, env: Behaviour, coordinator: CommBusCoordinator) -> None:
        super().__init__(env, coordinator)
        self.descriptor = ServiceDescriptor(
            "billing", "vertical", "1.0.3", ["charge", "quota", "usage"], max_concurrent=2
        )
        self.methods = {"charge": self.charge}
        self.usage = 0

    async def charge(self, envelope: Envelope) -> Envelope:
        await self.env.pause(20, 90)
        envelope.outputs["charged"] = True
        return envelope

    async def quota(self, query: GetQuota) -> dict[str, int]:
        if self.env.chance(0.08):
            await asyncio.sleep(1.0)  # the ledger is locked: the query times out
        await self.env.pause(2, 15)
        return {"remaining": self.env.rng.randint(0, 10_000)}

    async def record_usage(self, command: RecordUsage) -> None:
        await self.env.pause(1, 6)
        self.usage += command.tokens

    def on_pipeline_completed(self, event: PipelineCompleted) -> None:
        self.usage += 1


class Notifications(ServiceBase):
    def __init__(self, env: Behaviour, coordinator: CommBusCoordinator) -> None:
        super().__init__(env, coordinator)
        self.descriptor = ServiceDescriptor(
            "notifications", "vertical", "2.0.0", ["notify"], max_concurrent=5
        )
        self.sent = 0

    async def send_notification(self, command: SendNotification) -> None:
        await self.env.pause(3, 25)
        if self.env.chance(0.05):
            raise DeliveryError("push provider returned 503")
        self.sent += 1

    async def on_event(self, event: Any) -> None:
        await self.env.pause(1, 4)


class Audit(ServiceBase):
    def __init__(self, env: Behaviour, coordinator: CommBusCoordinator) -> None:
        super().__init__(env, coordinator)
        self.descriptor = ServiceDescriptor(
            "audit", "vertical", "1.2.0", ["audit"], max_concurrent=5
        )
        self.entries = 0

    def on_event(self, event: Any) -> None:
        self.entries += 1
