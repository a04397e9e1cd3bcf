"""The seam between the bus and a broker: what a transport must implement, and the step
that hands a message going out to it.

Adapters (``ipc/adapters``) implement :class:`Transport`; the bus only ever sees this
protocol, so a new broker never touches the core.
"""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine
from types import CoroutineType
from typing import Any, Protocol, runtime_checkable

from .chain import Route, Step
from .errors import TransportError
from .middleware import MiddlewareContext

__all__ = ["ToTransport", "Transport", "not_accepted"]


@runtime_checkable
class Transport(Protocol):
    """Carries the bus's messages to a broker (see :meth:`InMemoryCommBus.attach_transport`).

    The bus calls these with the message's context after the ``before`` hooks ran
    (``ctx.direction == "out"``; ``ctx.headers`` holds what middleware put on the wire).
    Messages arriving from the broker are handed back with
    :meth:`InMemoryCommBus.deliver_incoming`. ``publish`` returns once the event is queued,
    in order, on the transport's connection; ``send`` once the command is durably stored by
    the broker; ``query`` returns the remote handler's result or raises
    (``asyncio.TimeoutError``, :class:`NoHandlerError`, or the remote error). A message that
    cannot be accepted raises (:class:`TransportError`): nothing is dropped silently.
    ``system`` (optional, e.g. ``"redis"``) names the broker in telemetry.
    """

    async def publish(self, ctx: MiddlewareContext, message: Any) -> None: ...

    async def send(self, ctx: MiddlewareContext, message: Any) -> None: ...

    async def query(self, ctx: MiddlewareContext, message: Any, timeout: float) -> Any: ...


def not_accepted(pattern: str, message_type: str, exc: Exception) -> TransportError:
    """What a publish or send raises when its transport failed with ``exc``."""
    return TransportError(
        f"{pattern} {message_type!r} was not accepted by the transport: {type(exc).__name__}: {exc}"
    )


class ToTransport:
    """The steps of messages going out: hand them to ``transport``, one method per
    pattern, on the empty chain (:meth:`step`: a context is made, the transport needs it
    for the wire) and at the end of a chain (:meth:`observed_step`).

    A query's outcome is the remote one (result or exception); a publish or send the
    transport did not accept raises :class:`TransportError` (never dropped silently).

    On the empty chain a publish or send step hands back the transport's own awaitable
    (never an outcome string, so the bus awaits it), and the bus awaits it under
    :func:`not_accepted` (``InMemoryCommBus.publish``/``send``): the same translation as
    :meth:`_accepted`, written where the awaitable is awaited, so that a message going out
    costs one coroutine less (15-20 % of a publish to a transport that accepts at once,
    ``benchmarks/bench_core_ab.py`` ``publish_out``).
    At the end of a chain it stays here, so that the ``after`` hooks see the
    :class:`TransportError`.
    """

    __slots__ = ("label", "system", "transport")

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.system: str = getattr(transport, "system", "jeeves.commbus")
        # the handler name of a message going out, as middleware sees it
        self.label = f"transport:{type(transport).__name__}"

    def step(self, pattern: str) -> Route:
        """The step of a ``pattern`` message going out on the empty chain."""
        if pattern == "publish":
            return self.publish
        if pattern == "send":
            return self.send
        return self.query

    def observed_step(self, pattern: str) -> Step:
        """The step of a ``pattern`` message going out at the end of a chain."""
        if pattern == "publish":
            return self.publish_observed
        if pattern == "send":
            return self.send_observed
        return self.query_observed

    # ------------------------------------------------------------------ the empty chain

    def publish(
        self, message: Any, message_type: str, timeout: float | None
    ) -> Coroutine[Any, Any, Any]:
        ctx = MiddlewareContext(
            message, message_type, None, None, "publish", None, "out", self.system
        )
        return self.transport.publish(ctx, message)  # the bus awaits it under not_accepted()

    def send(
        self, message: Any, message_type: str, timeout: float | None
    ) -> Coroutine[Any, Any, Any]:
        ctx = MiddlewareContext(message, message_type, None, None, "send", None, "out", self.system)
        return self.transport.send(ctx, message)

    def query(
        self, message: Any, message_type: str, timeout: float | None
    ) -> Coroutine[Any, Any, Any]:
        ctx = MiddlewareContext(
            message, message_type, None, None, "query", None, "out", self.system
        )
        return self._answer(ctx, message, timeout)

    # ------------------------------------------------------------------ at the end of a chain

    def publish_observed(
        self, message: Any, message_type: str, timeout: float | None, ctx: MiddlewareContext
    ) -> Coroutine[Any, Any, Any]:
        ctx.handlers.append(self.label)
        return self._accepted(self.transport.publish(ctx, message), ctx, None)

    def send_observed(
        self, message: Any, message_type: str, timeout: float | None, ctx: MiddlewareContext
    ) -> Coroutine[Any, Any, Any]:
        ctx.handlers.append(self.label)
        return self._accepted(self.transport.send(ctx, message), ctx, None)

    def query_observed(
        self, message: Any, message_type: str, timeout: float | None, ctx: MiddlewareContext
    ) -> Coroutine[Any, Any, Any]:
        ctx.handlers.append(self.label)
        return self._answer(ctx, message, timeout)

    def _answer(
        self, ctx: MiddlewareContext, message: Any, timeout: float | None
    ) -> Coroutine[Any, Any, Any]:
        """The remote outcome of a query as it comes: the transport's own coroutine,
        awaited directly by the caller."""
        assert timeout is not None  # the bus always gives a query its timeout
        answer = self.transport.query(ctx, message, timeout)
        return answer if answer.__class__ is CoroutineType else _awaited(answer)

    @staticmethod
    async def _accepted(handing: Awaitable[Any], ctx: MiddlewareContext, accepted: Any) -> Any:
        """Await a publish or send being handed over; ``accepted`` once the transport took
        it, :class:`TransportError` when it did not."""
        try:
            await handing
        except TransportError:
            raise
        except Exception as exc:
            raise not_accepted(ctx.pattern, ctx.message_type, exc) from exc
        return accepted


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
