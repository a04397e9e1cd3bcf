"""The messages the conformance suite sends, registered in :data:`REGISTRY`.

A transport under test must carry them: its ``connect`` factory receives this registry
(see :class:`~jeeves_control_tower.testing.conformance.TransportUnderTest`). They cover
the wire codec's ground: an enum, a nested dataclass, lists, dicts, an optional field, a
query result that is itself a registered message, and one class left unregistered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from ..ipc.adapters import MessageRegistry

__all__ = [
    "REGISTRY",
    "Answer",
    "Ask",
    "DoWork",
    "Happened",
    "Level",
    "NotRegistered",
    "Other",
    "Point",
    "Rich",
]


class Level(StrEnum):
    LOW = "low"
    HIGH = "high"


@dataclass
class Point:
    x: int
    y: int


@dataclass
class Happened:
    n: int
    note: str = ""
    category: str = field(default="event", init=False)


@dataclass
class Other:
    n: int
    category: str = field(default="event", init=False)


@dataclass
class DoWork:
    n: int
    message_id: str | None = None
    category: str = field(default="command", init=False)


@dataclass
class Ask:
    n: int
    sleep: float = 0.0
    fail: bool = False
    category: str = field(default="query", init=False)


@dataclass
class Rich:
    point: Point
    level: Level
    tags: list[str]
    scores: dict[str, float]
    maybe: int | None = None
    category: str = field(default="query", init=False)


@dataclass
class Answer:
    value: int
    source: str


@dataclass
class NotRegistered:
    n: int


#: Every class above except :class:`NotRegistered`.
REGISTRY = MessageRegistry()
for _cls in (Happened, Other, DoWork, Ask, Rich, Answer, Point):
    REGISTRY.register(_cls)
