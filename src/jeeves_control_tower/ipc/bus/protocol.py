"""What the coordinator and adapters need from a bus, as a protocol."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ..messages import HandlerFunc

__all__ = ["CommBusProtocol"]


@runtime_checkable
class CommBusProtocol(Protocol):
    """What the coordinator and adapters need from a bus."""

    async def publish(self, event: Any) -> None: ...

    async def send(self, command: Any) -> None: ...

    async def query(self, query: Any, timeout: float | None = None) -> Any: ...

    def subscribe(self, event_type: str, handler: HandlerFunc) -> Callable[[], None]: ...

    def register_handler(self, message_type: str, handler: HandlerFunc) -> None: ...

    def has_handler(self, message_type: str) -> bool: ...
