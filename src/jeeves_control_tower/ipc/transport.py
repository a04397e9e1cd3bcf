"""The seam between the bus and a broker: what a transport must implement.

Adapters (``ipc/adapters``) implement :class:`Transport`; the bus only ever sees this
protocol, so a new broker never touches the core.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from .middleware import MiddlewareContext

__all__ = ["Transport"]


@runtime_checkable
class Transport(Protocol):
    """Carries the bus's messages to a broker (see :meth:`InMemoryCommBus.attach_transport`).

    The bus calls these with the message's context after the ``before`` hooks ran
    (``ctx.direction == "out"``; ``ctx.headers`` holds what middleware put on the wire).
    Messages arriving from the broker are handed back with
    :meth:`InMemoryCommBus.deliver_local`. ``publish`` returns once the event is queued, in
    order, on the transport's connection; ``send`` once the command is durably stored by
    the broker; ``query`` returns the remote handler's result or raises
    (``asyncio.TimeoutError``, :class:`NoHandlerError`, or the remote error). A message that
    cannot be accepted raises (:class:`TransportError`): nothing is dropped silently.
    ``system`` (optional, e.g. ``"redis"``) names the broker in telemetry.
    """

    async def publish(self, ctx: MiddlewareContext, message: Any) -> None: ...

    async def send(self, ctx: MiddlewareContext, message: Any) -> None: ...

    async def query(self, ctx: MiddlewareContext, message: Any, timeout: float) -> Any: ...
