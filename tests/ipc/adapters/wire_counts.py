"""What the transport tests share: the wire-traffic counts every broker must keep."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.testing import eventually
from jeeves_control_tower.testing.messages import Ask, DoWork, Happened
from tests.helpers import ListLogger


async def check_wire_counts(env: dict[str, Any], transport: str) -> None:
    """Producer and consumer "processes" (one registry each): 7 publishes, 4 sends, 3
    queries and one junk frame; every ``commbus_wire_messages_total`` series must match."""
    producer, consumer = InMemoryCommBus(instrument=False), InMemoryCommBus(instrument=False)
    preg, creg = CollectorRegistry(), CollectorRegistry()  # one per process
    events: list[int] = []
    commands: list[int] = []
    consumer.subscribe("Happened", lambda e: events.append(e.n))
    consumer.register_handler("DoWork", lambda c: commands.append(c.n))
    consumer.register_handler("Ask", lambda q: q.n)
    tc = await env["connect"](consumer, metrics_registry=creg, logger=ListLogger())
    await env["connect"](producer, metrics_registry=preg)
    await tc.sync()
    await env["raw"].publish(tc.destination("publish", "Happened"), b"junk")  # rejected
    for i in range(7):
        await producer.publish(Happened(i))
    for i in range(4):
        await producer.send(DoWork(i))
    for i in range(3):
        assert await producer.query(Ask(i)) == i
    await eventually(lambda: len(events) == 7 and len(commands) == 4)

    def wire(reg: CollectorRegistry, direction: str) -> dict[str, float]:
        return {
            p: reg.get_sample_value(
                "commbus_wire_messages_total",
                {"transport": transport, "direction": direction, "pattern": p},
            )
            or 0.0
            for p in ("publish", "send", "query", "reply")
        }

    rejected = {"transport": transport, "reason": "malformed"}
    await eventually(lambda: creg.get_sample_value("commbus_wire_rejected_total", rejected) == 1)
    assert wire(preg, "sent") == {"publish": 7, "send": 4, "query": 3, "reply": 0}
    assert wire(preg, "received") == {"publish": 0, "send": 0, "query": 0, "reply": 3}
    assert wire(creg, "sent") == {"publish": 0, "send": 0, "query": 0, "reply": 3}
    assert wire(creg, "received") == {"publish": 7, "send": 4, "query": 3, "reply": 0}
