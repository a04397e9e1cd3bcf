"""The API reference's usage example, run as written (with an Envelope and a logger)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from jeeves_control_tower.ipc import CommBusCoordinator, get_commbus
from jeeves_control_tower.types import (
    DispatchTarget,
    Envelope,
    RequestContext,
    SchedulingPriority,
    ServiceDescriptor,
)


@dataclass
class GetSessionState:
    session_id: str
    category: str = field(default="query", init=False)


@dataclass
class MemoryStored:
    item_id: str
    layer: str
    category: str = field(default="event", init=False)


async def test_reference_usage_example(capsys: object) -> None:
    logger = logging.getLogger("example")
    envelope = Envelope(request_context=RequestContext(request_id="req-1", capability="execute"))

    # Get singleton CommBus
    bus = get_commbus()

    # Create coordinator
    coordinator = CommBusCoordinator(logger)  # type: ignore[arg-type]

    # Register a service
    coordinator.register_service(
        ServiceDescriptor(
            name="flow_service",
            service_type="flow",
            capabilities=["execute"],
        )
    )

    # Register handler
    async def handle_flow(envelope: Envelope) -> Envelope:
        return envelope  # Process and return

    coordinator.register_handler("flow_service", handle_flow)

    # Dispatch request
    result = await coordinator.dispatch(
        target=DispatchTarget(
            service_name="flow_service", method="run", priority=SchedulingPriority.HIGH
        ),
        envelope=envelope,
    )
    assert result is envelope and not result.terminated

    # Subscribe to events
    seen = []

    def on_memory_stored(event: MemoryStored) -> None:
        seen.append(f"Memory stored: {event}")

    unsubscribe = bus.subscribe("MemoryStored", on_memory_stored)
    await coordinator.publish_event(MemoryStored(item_id="123", layer="L2"))
    unsubscribe()
    assert seen == ["Memory stored: MemoryStored(item_id='123', layer='L2', category='event')"]

    # Query with response
    bus.register_handler(
        "GetSessionState", lambda q: {"session_id": q.session_id, "state": "active"}
    )
    state = await bus.query(GetSessionState(session_id="abc"))
    assert state == {"session_id": "abc", "state": "active"}
    assert coordinator.commbus is bus
