"""InMemoryCommBus: publish (fan-out), send (one handler), query (request/response).

Concurrency contract: a bus belongs to one event loop thread; all methods must be called
from it. ``subscribe``/``register_handler``/``add_middleware`` take effect immediately and
are safe to call from inside a handler or middleware (a publish already in progress keeps
the subscriber list it started with).

Handlers are started eagerly: a handler that never suspends runs to completion inside the
``publish``/``send``/``query`` call without a task or timer being created. A handler that
suspends is driven on (concurrently with the other subscribers of a publish, under the
timeout of a query) exactly as if it had been awaited in a task. Context variables a
handler sets before its first suspension may be visible to the caller on the
uninstrumented path, as with a plain ``await``; don't rely on either behaviour.

This module holds the public API, registration and the transport seam; the delivery engine
the bus inherits (chain, fan-out, handler runs) lives in :mod:`.delivery`, the transport
protocol in :mod:`.transport`, the exceptions in :mod:`.errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Protocol, runtime_checkable

from ..logging import ensure_logger
from ..types import LoggerProtocol
from .delivery import Delivery, not_accepted
from .eager import Resume, resume_within, start
from .errors import NoHandlerError, QueryAbortedError, TransportError
from .handlers import HandlerEntry, check_handler, check_name, check_timeout
from .messages import HandlerFunc, get_message_type
from .middleware import (
    PATTERNS,
    AnyMiddleware,
    CompiledChain,
    MiddlewareContext,
    validate_middleware,
)
from .transport import Transport

__all__ = [
    "CommBusProtocol",
    "InMemoryCommBus",
    "NoHandlerError",
    "QueryAbortedError",
    "Transport",
    "TransportError",
    "get_commbus",
    "reset_commbus",
]


@runtime_checkable
class CommBusProtocol(Protocol):
    """What the coordinator and adapters need from a bus."""

    async def publish(self, event: Any) -> None: ...

    async def send(self, command: Any) -> None: ...

    async def query(self, query: Any, timeout: float | None = None) -> Any: ...

    def subscribe(self, event_type: str, handler: HandlerFunc) -> Callable[[], None]: ...

    def register_handler(self, message_type: str, handler: HandlerFunc) -> None: ...

    def has_handler(self, message_type: str) -> bool: ...


class InMemoryCommBus(Delivery):
    """An asyncio message bus with three patterns and a middleware chain.

    - :meth:`publish`: fan-out to every subscriber of the event's type, concurrently. A
      failing subscriber is logged and does not affect the others or the publisher.
    - :meth:`send`: exactly one handler, awaited; its errors are logged, not raised.
    - :meth:`query`: one handler, its result returned, under a timeout.

    Ordering: subscribers of one publish are started in subscription order. Messages from
    one caller are handled in the order the caller awaits them; nothing is queued.
    """

    def __init__(
        self,
        query_timeout: float = 30.0,
        logger: LoggerProtocol | None = None,
        **telemetry: Any,
    ) -> None:
        """``query_timeout`` is the default for :meth:`query` (seconds, > 0).

        Keyword arguments beyond the reference signature configure the built-in telemetry
        and are handed to :func:`jeeves_control_tower.observability.instrument_bus`:
        ``instrument`` (``True`` by default when the observability extra is installed,
        ``False`` turns it off), ``tracer_provider``, ``registry``, ``flow``, ...
        """
        check_timeout(query_timeout, "query_timeout")
        self._query_timeout = float(query_timeout)
        self._logger = ensure_logger(logger, "jeeves_control_tower.ipc")
        self._subscribers: dict[str, tuple[HandlerEntry, ...]] = {}
        self._handlers: dict[str, HandlerEntry] = {}
        self._middlewares: list[Any] = []
        # The compiled chain of each pattern for messages produced here (direction "local",
        # or "out" with a transport) and for messages a transport delivers ("in"); None:
        # no middleware applies, the direct path.
        self._publish_chain: CompiledChain | None = None
        self._send_chain: CompiledChain | None = None
        self._query_chain: CompiledChain | None = None
        self._in_chains: dict[str, CompiledChain | None] = {}
        self._transport: Transport | None = None
        self._transport_label = ""
        self._transport_system = "jeeves.commbus"
        self._registration_listeners: tuple[Callable[[], None], ...] = ()
        self.telemetry: Any = None
        instrument = telemetry.pop("instrument", None)
        if instrument is not False:
            from .._instrumentation import auto_instrument_bus

            self.telemetry = auto_instrument_bus(self, explicit=instrument is True, **telemetry)
        elif telemetry:
            raise TypeError(f"unexpected arguments with instrument=False: {sorted(telemetry)}")

    # ------------------------------------------------------------------ registration

    @property
    def query_timeout(self) -> float:
        return self._query_timeout

    @property
    def logger(self) -> LoggerProtocol:
        return self._logger

    def subscribe(self, event_type: str, handler: HandlerFunc) -> Callable[[], None]:
        """Subscribe ``handler`` to events of ``event_type``; effective immediately.

        The same handler may subscribe twice and is then called twice. Returns a function
        that removes this subscription; calling it again does nothing.
        """
        check_name(event_type, "event_type")
        check_handler(handler)
        entry = HandlerEntry(handler)
        self._subscribers[event_type] = (*self._subscribers.get(event_type, ()), entry)
        self._registrations_changed()

        def unsubscribe() -> None:
            current = self._subscribers.get(event_type)
            if not current or entry not in current:
                return
            remaining = tuple(e for e in current if e is not entry)
            if remaining:
                self._subscribers[event_type] = remaining
            else:
                del self._subscribers[event_type]
            self._registrations_changed()

        return unsubscribe

    def register_handler(self, message_type: str, handler: HandlerFunc) -> None:
        """Register the one handler for commands/queries of ``message_type``.

        Raises ``ValueError`` when the type already has a handler.
        """
        check_name(message_type, "message_type")
        check_handler(handler)
        if message_type in self._handlers:
            raise ValueError(f"a handler is already registered for {message_type!r}")
        self._handlers[message_type] = HandlerEntry(handler)
        self._registrations_changed()

    def unregister_handler(self, message_type: str) -> bool:
        """Remove the handler of ``message_type``; ``True`` if there was one."""
        removed = self._handlers.pop(message_type, None) is not None
        if removed:
            self._registrations_changed()
        return removed

    def add_registration_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` after every change of the subscribers or handlers.

        For transports, which consume from the broker what is registered here. The listener
        runs synchronously inside ``subscribe``/``register_handler``/...; it must be fast
        (schedule async work, don't do it); its exceptions are logged and ignored. Returns
        a function that removes the listener."""
        check_handler(listener)
        self._registration_listeners += (listener,)

        def remove() -> None:
            self._registration_listeners = tuple(
                x for x in self._registration_listeners if x is not listener
            )

        return remove

    def _registrations_changed(self) -> None:
        for listener in self._registration_listeners:
            try:
                listener()
            except Exception as exc:
                self._logger.error(
                    "registration_listener_failed", error_type=type(exc).__name__, error=str(exc)
                )

    def add_middleware(self, middleware: AnyMiddleware) -> None:
        """Append ``middleware`` to the chain (it becomes the innermost)."""
        validate_middleware(middleware)
        chains = self._compile([*self._middlewares, middleware])  # may raise: nothing changed
        self._middlewares.append(middleware)
        self._set_chains(*chains)

    def remove_middleware(self, middleware: Any) -> bool:
        """Remove ``middleware`` from the chain; ``True`` if it was there."""
        for i, mw in enumerate(self._middlewares):
            if mw is middleware:
                del self._middlewares[i]
                self._rebuild_chain()
                return True
        return False

    def _rebuild_chain(self) -> None:
        self._set_chains(*self._compile(self._middlewares))

    def _compile(
        self, middlewares: list[Any]
    ) -> tuple[dict[str, CompiledChain | None], dict[str, CompiledChain | None]]:
        chain = CompiledChain.build(middlewares)
        direction = "local" if self._transport is None else "out"
        own = {p: chain.scoped(p, direction) if chain else None for p in PATTERNS}
        inbound = {p: chain.scoped(p, "in") if chain else None for p in PATTERNS}
        return own, inbound

    def _set_chains(
        self, own: dict[str, CompiledChain | None], inbound: dict[str, CompiledChain | None]
    ) -> None:
        self._publish_chain = own["publish"]
        self._send_chain = own["send"]
        self._query_chain = own["query"]
        self._in_chains = inbound

    # ------------------------------------------------------------------ transport

    @property
    def transport(self) -> Transport | None:
        return self._transport

    def attach_transport(self, transport: Transport) -> None:
        """Route this bus's publish/send/query through ``transport`` (one at a time).

        From now on the application's messages go out through the transport; what the
        transport receives from the broker it delivers with :meth:`deliver_local`. Local
        subscriptions and handlers stay where they are: the transport watches
        :meth:`get_registered_types` (and :meth:`has_handler`) to know what to consume.
        """
        if self._transport is not None and self._transport is not transport:
            raise ValueError("a transport is already attached; detach it first")
        self._transport = transport
        self._transport_label = f"transport:{type(transport).__name__}"
        self._transport_system = getattr(transport, "system", "jeeves.commbus")
        self._rebuild_chain()

    def detach_transport(self) -> None:
        """Go back to in-process delivery."""
        self._transport = None
        self._transport_label = ""
        self._transport_system = "jeeves.commbus"
        self._rebuild_chain()

    def deliver_local(
        self,
        pattern: str,
        message: Any,
        *,
        headers: dict[str, str] | None = None,
        message_id: str | None = None,
        timeout: float | None = None,
    ) -> Coroutine[Any, Any, tuple[str, Any]]:
        """Deliver a message that arrived from a broker to this process's handlers:
        ``outcome, result = await bus.deliver_local(...)``.

        Runs the middleware chain with ``ctx.direction == "in"`` and ``ctx.headers`` set to
        ``headers``. Returns ``(outcome, result)``: outcome as in ``ctx.outcome``; for a
        query the handler's exceptions (and :class:`NoHandlerError`) propagate so the
        transport can send them back; for publish and send they are logged, as locally.
        An unknown ``pattern`` raises ``ValueError`` at the call. (A plain method returning
        the coroutine: one coroutine frame less per message from a broker.)
        """
        if pattern not in PATTERNS:
            raise ValueError(f"unknown pattern {pattern!r}")
        chain = self._in_chains.get(pattern)
        message_type = get_message_type(message)
        if chain is None:  # no middleware wants to see it
            return self._deliver_direct(pattern, message, message_type, timeout)
        ctx = MiddlewareContext(
            message, message_type, None, None, pattern, message_id, "in", self._transport_system
        )
        ctx.headers = headers
        ctx.hooks = chain.hooks
        return self._run_in(ctx, message, chain, timeout)

    async def _run_in(
        self, ctx: MiddlewareContext, message: Any, chain: CompiledChain, timeout: float | None
    ) -> tuple[str, Any]:
        result = await self._run_ctx(ctx, message, chain, timeout)
        return ctx.outcome, result

    @property
    def middlewares(self) -> tuple[Any, ...]:
        return tuple(self._middlewares)

    # ------------------------------------------------------------------ introspection

    def has_handler(self, message_type: str) -> bool:
        """Check if a command/query handler is registered for ``message_type``."""
        return message_type in self._handlers

    def get_subscribers(self, event_type: str) -> list[HandlerFunc]:
        """All subscribers of ``event_type``, in subscription order."""
        return [e.fn for e in self._subscribers.get(event_type, ())]

    def get_registered_types(self) -> list[str]:
        """Every type with at least one subscriber or a handler, sorted."""
        return sorted(set(self._subscribers) | set(self._handlers))

    def clear(self) -> None:
        """Drop every subscriber, handler and middleware (telemetry included)."""
        self._subscribers.clear()
        self._handlers.clear()
        self._middlewares.clear()
        self._rebuild_chain()
        self._registrations_changed()

    # ------------------------------------------------------------------ publish

    async def publish(self, event: Any) -> None:
        """Deliver ``event`` to every subscriber of its type, concurrently.

        Returns when every subscriber has finished. Subscriber errors are logged, never
        raised. Cancelling the publisher cancels the subscribers still running.
        """
        message_type = get_message_type(event)
        chain = self._publish_chain
        if chain is not None:
            await self._run_chain("publish", event, message_type, chain, None)
            return
        transport = self._transport
        # The direct path out, _through inlined: per event, one coroutine less (send and
        # query wait for the broker, where a coroutine does not count).
        if transport is not None:
            try:
                await transport.publish(self._out_context("publish", event, message_type), event)
            except TransportError:
                raise
            except Exception as exc:
                raise not_accepted("publish", message_type, exc) from exc
            return
        subs = self._subscribers.get(message_type)
        if not subs:
            return
        if len(subs) == 1:
            sub = subs[0]
            try:
                result = start(sub.fn, sub.is_async, event)
                if result.__class__ is Resume:
                    await result
            except Exception as exc:
                self._subscriber_failed(message_type, sub, exc)
            return
        await self._fan_out(event, message_type, subs, None)

    # ------------------------------------------------------------------ send

    async def send(self, command: Any) -> None:
        """Deliver ``command`` to its one handler and wait for it to finish.

        Handler errors are logged, not raised; a command with no handler is logged as a
        warning. Cancelling the sender cancels the handler.
        """
        message_type = get_message_type(command)
        chain = self._send_chain
        if chain is not None:
            await self._run_chain("send", command, message_type, chain, None)
            return
        transport = self._transport
        if transport is not None:
            ctx = self._out_context("send", command, message_type)
            await self._through(transport, "send", ctx, command, None)
            return
        handler = self._handlers.get(message_type)
        if handler is None:
            self._logger.warning("no_handler", pattern="send", message_type=message_type)
            return
        try:
            result = start(handler.fn, handler.is_async, command)
            if result.__class__ is Resume:
                await result
        except Exception as exc:
            self._send_failed(message_type, handler, exc)

    # ------------------------------------------------------------------ query

    async def query(self, query: Any, timeout: float | None = None) -> Any:
        """Send ``query`` to its handler and return the result.

        ``timeout`` (seconds, > 0) defaults to the bus's ``query_timeout``; the timer is
        armed only if the handler suspends. Raises ``asyncio.TimeoutError`` when it
        expires (the handler is cancelled first), :class:`NoHandlerError` (a
        ``ValueError``) when no handler is registered, :class:`QueryAbortedError` (a
        ``ValueError``) when a middleware aborted it; the handler's own exceptions
        propagate unchanged.
        """
        if timeout is None:
            timeout = self._query_timeout
        else:
            check_timeout(timeout, "timeout")
        message_type = get_message_type(query)
        chain = self._query_chain
        if chain is not None:
            return await self._run_chain("query", query, message_type, chain, timeout)
        transport = self._transport
        if transport is not None:
            ctx = self._out_context("query", query, message_type)
            return await self._through(transport, "query", ctx, query, timeout)
        handler = self._handlers.get(message_type)
        if handler is None:
            raise NoHandlerError(f"no handler registered for query type {message_type!r}")
        result = start(handler.fn, handler.is_async, query)
        if result.__class__ is Resume:
            return await resume_within(result, timeout)
        return result

    # ------------------------------------------------------------------ middleware path

    def _run_chain(
        self,
        pattern: str,
        message: Any,
        message_type: str,
        chain: CompiledChain,
        timeout: float | None,
    ) -> Coroutine[Any, Any, Any]:
        # A plain function returning _run_ctx's coroutine, which the caller awaits at once
        # (perf: one coroutine frame less per message than ``async def`` + ``await``).
        direction = "local" if self._transport is None else "out"
        system = self._transport_system
        ctx = MiddlewareContext(message, message_type, None, None, pattern, None, direction, system)
        ctx.hooks = chain.hooks
        return self._run_ctx(ctx, message, chain, timeout)


_global_bus: InMemoryCommBus | None = None


def get_commbus(logger: LoggerProtocol | None = None) -> InMemoryCommBus:
    """Get the process-wide CommBus, creating it on first use (with ``logger``, if given).

    A ``logger`` passed once the bus exists is ignored.
    """
    global _global_bus
    if _global_bus is None:
        _global_bus = InMemoryCommBus(logger=logger)
    return _global_bus


def reset_commbus() -> None:
    """Forget the process-wide CommBus (for tests); the next :func:`get_commbus` builds a
    new one."""
    global _global_bus
    bus = _global_bus
    _global_bus = None
    if bus is not None and bus.telemetry is not None:
        close = getattr(bus.telemetry, "close", None)
        if callable(close):
            close()
