"""The demo's typed messages: events fan out, commands have one handler, queries answer."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "GetQuota",
    "GetSessionState",
    "InvalidateCache",
    "MemoryStored",
    "PipelineCompleted",
    "RecordUsage",
    "SearchMemory",
    "SendNotification",
    "ServiceHealthChanged",
]


@dataclass
class MemoryStored:
    item_id: str
    layer: str
    category: str = field(default="event", init=False)


@dataclass
class PipelineCompleted:
    session_id: str
    steps: int
    category: str = field(default="event", init=False)


@dataclass
class ServiceHealthChanged:
    service: str
    healthy: bool
    category: str = field(default="event", init=False)


@dataclass
class RecordUsage:
    session_id: str
    tokens: int
    category: str = field(default="command", init=False)


@dataclass
class InvalidateCache:
    key: str
    category: str = field(default="command", init=False)


@dataclass
class SendNotification:
    user_id: str
    text: str
    category: str = field(default="command", init=False)


@dataclass
class GetSessionState:
    session_id: str
    category: str = field(default="query", init=False)


@dataclass
class SearchMemory:
    text: str
    limit: int = 5
    category: str = field(default="query", init=False)


@dataclass
class GetQuota:
    user_id: str
    category: str = field(default="query", init=False)
