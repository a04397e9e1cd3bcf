"""API misuse gets a clear error or a well-defined, documented behaviour."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus, RetryPolicy
from jeeves_control_tower.types import DispatchTarget, Envelope, RequestContext, ServiceDescriptor


@dataclass
class Ev:
    n: int = 0


async def test_none_is_not_a_message(bus: InMemoryCommBus) -> None:
    for call in (bus.publish, bus.send, bus.query):
        with pytest.raises(TypeError, match="must not be None"):
            await call(None)


@pytest.mark.parametrize("name", ["", None, 3, b"x"])
def test_bad_type_names(bus: InMemoryCommBus, name: Any) -> None:
    with pytest.raises(ValueError):
        bus.subscribe(name, lambda e: None)
    with pytest.raises(ValueError):
        bus.register_handler(name, lambda e: None)


@pytest.mark.parametrize("handler", [None, 1, "handler", object()])
def test_handlers_must_be_callable(bus: InMemoryCommBus, handler: Any) -> None:
    with pytest.raises(TypeError, match="callable"):
        bus.subscribe("Ev", handler)
    with pytest.raises(TypeError, match="callable"):
        bus.register_handler("Ev", handler)


def test_bad_numbers() -> None:
    with pytest.raises(ValueError):
        InMemoryCommBus(query_timeout=-1, instrument=False)
    with pytest.raises(ValueError):
        ServiceDescriptor(name="s", service_type="w", max_concurrent=-3)
    with pytest.raises(ValueError):
        DispatchTarget(service_name="s", method="m", timeout_seconds=-0.5)
    with pytest.raises(ValueError):
        CommBusCoordinator(None, InMemoryCommBus(instrument=False), max_queue=-1, instrument=False)
    with pytest.raises(TypeError, match="unexpected"):
        InMemoryCommBus(instrument=False, registry=object())


async def test_subscribing_during_a_publish_applies_from_the_next_one(bus: InMemoryCommBus) -> None:
    seen: list[str] = []

    def late(e: Ev) -> None:
        seen.append(f"late{e.n}")

    def first(e: Ev) -> None:
        seen.append(f"first{e.n}")
        if e.n == 1:
            bus.subscribe("Ev", late)

    bus.subscribe("Ev", first)
    await bus.publish(Ev(1))
    await bus.publish(Ev(2))
    assert seen == ["first1", "first2", "late2"]


async def test_registering_a_handler_inside_a_handler(bus: InMemoryCommBus) -> None:
    async def register_other(_: Any) -> str:
        bus.register_handler("Other", lambda q: "other")
        return "done"

    bus.register_handler("Ev", register_other)
    assert await bus.query(Ev()) == "done"
    assert await bus.query(type("Other", (), {})()) == "other"


async def test_handler_that_unregisters_itself(bus: InMemoryCommBus) -> None:
    async def once(_: Any) -> str:
        bus.unregister_handler("Ev")
        await asyncio.sleep(0)
        return "ran"

    bus.register_handler("Ev", once)
    assert await bus.query(Ev()) == "ran"
    assert not bus.has_handler("Ev")


async def test_dispatch_handler_that_unregisters_its_service() -> None:
    bus = InMemoryCommBus(instrument=False)
    coord = CommBusCoordinator(
        None, bus, retry_policy=RetryPolicy(initial_delay=0, max_delay=0), instrument=False
    )
    svc = ServiceDescriptor(name="s", service_type="w")
    coord.register_service(svc)

    async def handler(e: Envelope) -> Envelope:
        coord.unregister_service("s")
        await asyncio.sleep(0)
        return e

    coord.register_handler("s", handler)
    env = Envelope(request_context=RequestContext(request_id="r", capability="c"))
    out = await coord.dispatch(DispatchTarget(service_name="s", method="m"), env)
    assert not out.terminated and svc.current_load == 0
