"""The three message classes the producers send, registered in :data:`MESSAGES`."""

from __future__ import annotations

from dataclasses import dataclass, field

from jeeves_control_tower.ipc.adapters import MessageRegistry

from .settings import PAYLOAD


@dataclass
class LoadEvent:
    producer: int
    seq: int
    ts: float  # time.perf_counter() at the call (producer and consumer share this process)
    body: str = PAYLOAD
    category: str = field(default="event", init=False)


@dataclass
class LoadCommand:
    producer: int
    seq: int
    ts: float
    body: str = PAYLOAD
    category: str = field(default="command", init=False)


@dataclass
class LoadQuery:
    producer: int
    seq: int
    ts: float
    body: str = PAYLOAD
    category: str = field(default="query", init=False)


MESSAGES = MessageRegistry()
for _cls in (LoadEvent, LoadCommand, LoadQuery):
    MESSAGES.register(_cls)
