"""``InMemoryCommBus.refresh_routes()``: a middleware whose ``applies_to`` answer changed
is asked again; a message under way finishes on the route it started on."""

from __future__ import annotations

import asyncio
from typing import Any

from jeeves_control_tower.ipc import InMemoryCommBus, MiddlewareContext


class DoThing:
    category = "command"


class Switch:
    """Applies to local messages while ``on``; records its hooks."""

    def __init__(self) -> None:
        self.on = False
        self.calls: list[str] = []

    def applies_to(self, pattern: str, direction: str) -> bool:
        return self.on or direction != "local"

    def before(self, ctx: MiddlewareContext, message: Any) -> Any:
        self.calls.append("before")
        return message

    def after(self, ctx: MiddlewareContext, message: Any, result: Any, error: Any) -> Any:
        self.calls.append("after")
        return result


async def test_refresh_routes_asks_applies_to_again() -> None:
    bus = InMemoryCommBus(instrument=False)
    switch = Switch()
    bus.add_middleware(switch)
    bus.register_handler("DoThing", lambda c: None)
    await bus.send(DoThing())
    switch.on = True
    await bus.send(DoThing())
    assert switch.calls == []  # not asked per message
    bus.refresh_routes()
    await bus.send(DoThing())
    assert switch.calls == ["before", "after"]
    switch.on = False
    bus.refresh_routes()
    await bus.send(DoThing())
    assert switch.calls == ["before", "after"]


async def test_a_message_under_way_keeps_its_route() -> None:
    bus = InMemoryCommBus(instrument=False)
    switch = Switch()
    switch.on = True
    bus.add_middleware(switch)
    release = asyncio.Event()

    async def handler(command: Any) -> None:
        switch.on = False
        bus.refresh_routes()  # mid-message, from its own handler
        await release.wait()

    bus.register_handler("DoThing", handler)
    running = asyncio.ensure_future(bus.send(DoThing()))
    await asyncio.sleep(0)
    assert switch.calls == ["before"]
    release.set()
    await running
    assert switch.calls == ["before", "after"]  # its after hook still ran
    await bus.send(DoThing())
    assert switch.calls == ["before", "after"]  # the next one: no middleware
