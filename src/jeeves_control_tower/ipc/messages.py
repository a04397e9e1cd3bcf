"""Message protocols, the message-type rule, and the dynamic messages the coordinator sends.

A message is any object. Its *type* (the routing key) is its class name, unless it carries a
``message_type`` string attribute, which wins. ``category`` ("event", "command", "query") is
informative; routing never depends on it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Command",
    "DynamicEvent",
    "DynamicQuery",
    "Event",
    "HandlerFunc",
    "Message",
    "Query",
    "get_message_type",
]

#: A subscriber or handler: sync or async, one argument (the message).
HandlerFunc = Callable[[Any], Any | Awaitable[Any]]


@runtime_checkable
class Message(Protocol):
    """Base protocol for all CommBus messages."""

    category: str  # "event", "command", or "query"


@runtime_checkable
class Event(Protocol):
    """Event message protocol - fan-out to all subscribers."""

    category: str


@runtime_checkable
class Command(Protocol):
    """Command message protocol - one handler, no result."""

    category: str


@runtime_checkable
class Query(Protocol):
    """Query message protocol - request-response with a single handler."""

    category: str


def get_message_type(message: Any) -> str:
    """The routing key of ``message``: its ``message_type`` attribute when that is a
    non-empty string, else its class name. ``None`` is not a message (``TypeError``)."""
    if message is None:
        raise TypeError("a message must not be None")
    dynamic = getattr(message, "message_type", None)
    if dynamic.__class__ is str and dynamic:
        return dynamic
    return type(message).__name__


@dataclass
class DynamicEvent:
    """An event whose type is a string chosen at run time (used by ``broadcast``)."""

    message_type: str
    payload: dict[str, Any] = field(default_factory=dict)
    category: str = field(default="event", init=False)


@dataclass
class DynamicQuery:
    """A query whose type is a string chosen at run time (used by ``request``)."""

    message_type: str
    payload: dict[str, Any] = field(default_factory=dict)
    service_name: str | None = None
    category: str = field(default="query", init=False)
