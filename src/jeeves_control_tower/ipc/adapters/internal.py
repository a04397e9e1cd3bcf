"""A transport's internal endpoints: the adapters' own traffic (such as service
heartbeats), taken from the broker into a callback instead of the application's bus."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["InternalCallback", "InternalEndpoints"]

InternalCallback = Callable[[Any], Awaitable[Any]]


class InternalEndpoints:
    """The callbacks of the internal endpoints, by ``(pattern, message type)``
    (:attr:`callbacks`), and the internal event types removed while perhaps still
    subscribed on the broker (:attr:`retired`): events of theirs still in flight are
    dropped, never handed to the application's bus. Event-loop-thread only."""

    def __init__(self) -> None:
        self.callbacks: dict[tuple[str, str], InternalCallback] = {}
        self.retired: set[str] = set()

    def keys(self) -> set[tuple[str, str]]:
        """The ``(pattern, message type)`` pairs consumed for internal endpoints."""
        return set(self.callbacks)

    def add(self, pattern: str, message_type: str, callback: InternalCallback) -> None:
        """Hand frames of ``(pattern, message_type)`` to ``callback`` (``publish``:
        ``await callback(message)``; ``query``: its result is the reply)."""
        self.callbacks[(pattern, message_type)] = callback
        if pattern == "publish":
            self.retired.discard(message_type)

    def remove(self, pattern: str, message_type: str) -> bool:
        """Stop handing ``(pattern, message_type)`` to its callback; whether there was
        one. A removed event type is retired."""
        if self.callbacks.pop((pattern, message_type), None) is None:
            return False
        if pattern == "publish":
            self.retired.add(message_type)
        return True
