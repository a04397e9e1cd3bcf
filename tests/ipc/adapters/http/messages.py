"""Message classes, a private registry and a wired coordinator for the HTTP face's tests."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus, RetryPolicy
from jeeves_control_tower.ipc.adapters.wire import MessageRegistry
from jeeves_control_tower.logging import NullLogger
from jeeves_control_tower.types import Envelope, ServiceDescriptor


class Currency(enum.Enum):
    EUR = "EUR"
    USD = "USD"


@dataclass
class Money:
    amount: float
    currency: Currency = Currency.EUR


@dataclass
class OrderPlaced:
    """An order was placed."""

    order_id: str
    lines: list[int]
    total: Money
    note: str | None = None
    category: str = field(default="event", init=False)


@dataclass
class ChargeCard:
    card: str
    amount: int
    mode: Literal["auth", "capture"] = "auth"
    category: str = field(default="command", init=False)


@dataclass
class GetBalance:
    account: str
    tags: dict[str, str] = field(default_factory=dict)
    category: str = field(default="query", init=False)


@dataclass
class Balance:
    account: str
    cents: int


@dataclass
class Untyped:
    value: Any
    flag: bool = False


def registry() -> MessageRegistry:
    reg = MessageRegistry()
    for cls in (OrderPlaced, ChargeCard, GetBalance, Balance, Untyped):
        reg.register(cls)
    return reg


class Wired:
    """A bus and coordinator with a handler for every message type and a service ``svc``."""

    def __init__(self) -> None:
        self.bus = InMemoryCommBus(query_timeout=5.0, instrument=False)
        self.coordinator = CommBusCoordinator(
            NullLogger(),
            self.bus,
            retry_policy=RetryPolicy(initial_delay=0.001, max_delay=0.01, jitter_floor=1.0),
            instrument=False,
        )
        self.events: list[Any] = []
        self.commands: list[Any] = []
        self.bus.subscribe("OrderPlaced", self.events.append)
        self.bus.register_handler("ChargeCard", self.commands.append)
        self.bus.register_handler("GetBalance", lambda q: Balance(q.account, 1200))
        self.bus.register_handler("Balance", lambda q: {"echo": q.cents})
        self.bus.subscribe("Untyped", self.events.append)
        self.bus.register_handler("Untyped", lambda q: [1, "two", None])
        self.coordinator.register_service(ServiceDescriptor(name="svc", service_type="worker"))
        self.coordinator.register_handler("svc", self.handle)

    async def handle(self, envelope: Envelope) -> Envelope:
        envelope.outputs["handled"] = True
        return envelope
