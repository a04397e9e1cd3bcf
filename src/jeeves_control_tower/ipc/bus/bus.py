"""InMemoryCommBus: publish (fan-out), send (one handler), query (request/response).

Concurrency contract: a bus belongs to one event loop thread; all methods must be called
from it. ``subscribe``/``register_handler``/``add_middleware`` take effect immediately and
are safe to call from inside a handler or middleware (a publish already in progress keeps
the subscriber list it started with).

Handlers run at once, in the caller's task: a handler that never suspends runs to
completion inside the ``publish``/``send``/``query`` call without a task or timer being
created. A handler that suspends is driven on (concurrently with the other subscribers of a
publish, under the timeout of a query) exactly as if it had been awaited in a task. Context
variables a handler sets before its first suspension may be visible to the caller on the
uninstrumented path, as with a plain ``await``; don't rely on either behaviour.

Every message runs one path: the route compiled for its pattern and direction
(:mod:`.routes`: the middleware chain of :mod:`.chain`, or none when no middleware
applies) to the step that delivers it to this process's handlers
(:class:`~.delivery.Delivery`, which the bus owns) or hands it to the attached transport
(:class:`~.transport.ToTransport`). Routes are compiled when the middleware list or the
transport changes, never per message. This module holds the public API and registration;
the exceptions live in :mod:`.errors`, the process-wide bus in :mod:`.default` and the
protocol a bus meets in :mod:`.protocol`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from ...logging import ensure_logger
from ...types import LoggerProtocol
from ..messages import HandlerFunc, get_message_type
from ..telemetry import MessageProbe, instrument_new
from .chain import CompiledChain, validate_middleware
from .delivery import Delivery
from .eager import CoroutineType, Resume
from .errors import NoHandlerError, QueryAbortedError, TransportError
from .handlers import HandlerEntry, check_handler, check_name, check_timeout
from .middleware import AnyMiddleware
from .routes import IncomingRoute, Route, compile_routes, run_incoming
from .transport import Transport, not_accepted

__all__ = [
    "InMemoryCommBus",
    "NoHandlerError",
    "QueryAbortedError",
    "Transport",
    "TransportError",
]


class InMemoryCommBus:
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

        Keyword arguments beyond the reference signature configure the telemetry, which
        attaches through the seam :mod:`jeeves_control_tower.ipc.telemetry` (by default the
        built-in one, :func:`jeeves_control_tower.observability.instrument_bus`, when the
        observability extra is installed): ``instrument`` (``False`` turns it off, ``True``
        insists on it), ``tracer_provider``, ``meter_provider``, ``registry``, ``flow``, ...
        """
        check_timeout(query_timeout, "query_timeout")
        self._query_timeout = float(query_timeout)
        self._logger = ensure_logger(logger, "jeeves_control_tower.ipc")
        self._subscribers: dict[str, tuple[HandlerEntry, ...]] = {}
        self._handlers: dict[str, HandlerEntry] = {}
        self._delivery = Delivery(self._subscribers, self._handlers, self._logger)
        self._middlewares: list[Any] = []
        self._transport: Transport | None = None
        self._probe: Any = None
        self._registration_listeners: tuple[Callable[[], None], ...] = ()
        # The route of each pattern for messages produced here (direction "local", or "out"
        # with a transport) and for messages a transport delivers ("in").
        self._publish_route: Route
        self._send_route: Route
        self._query_route: Route
        self._incoming_routes: Mapping[str, IncomingRoute]
        self._set_routes(None)
        self.telemetry: Any = None
        self.telemetry = instrument_new("bus", self, telemetry)

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
        chain = CompiledChain.build([*self._middlewares, middleware])  # may raise: no change
        self._middlewares.append(middleware)
        self._set_routes(chain)

    def remove_middleware(self, middleware: Any) -> bool:
        """Remove ``middleware`` from the chain; ``True`` if it was there."""
        for i, mw in enumerate(self._middlewares):
            if mw is middleware:
                del self._middlewares[i]
                self.refresh_routes()
                return True
        return False

    def refresh_routes(self) -> None:
        """Compile the routes again, asking every middleware's ``applies_to`` anew: what a
        middleware whose answer changed calls (on the bus's event-loop thread; messages
        already under way finish on the routes they started on)."""
        self._set_routes(CompiledChain.build(self._middlewares))

    def _set_routes(self, chain: CompiledChain | None) -> None:
        """Compile the routes from ``chain`` (the compiled middleware list) and the
        transport attached now."""
        routes = compile_routes(chain, self._transport, self._delivery, self._logger, self._probe)
        self._publish_route = routes.publish
        self._send_route = routes.send
        self._query_route = routes.query
        self._incoming_routes = routes.incoming

    @property
    def message_probe(self) -> Any:
        """The :class:`~jeeves_control_tower.ipc.telemetry.MessageProbe` set, or ``None``."""
        return self._probe

    def set_message_probe(self, probe: Any) -> None:
        """Report every message to ``probe`` from now on (``None``: stop); the telemetry
        seam for metrics and flow (:class:`~jeeves_control_tower.ipc.telemetry.MessageProbe`,
        which says what the bus calls and when). One probe at a time."""
        if probe is not None and not isinstance(probe, MessageProbe):
            raise TypeError(f"not a MessageProbe: {type(probe).__name__}")
        self._probe = probe
        self.refresh_routes()

    # ------------------------------------------------------------------ transport

    @property
    def transport(self) -> Transport | None:
        return self._transport

    def attach_transport(self, transport: Transport) -> None:
        """Route this bus's publish/send/query through ``transport`` (one at a time).

        From now on the application's messages go out through the transport; what the
        transport receives from the broker it delivers with :meth:`deliver_incoming`. Local
        subscriptions and handlers stay where they are: the transport watches
        :meth:`get_registered_types` (and :meth:`has_handler`) to know what to consume.
        """
        if self._transport is not None and self._transport is not transport:
            raise ValueError("a transport is already attached; detach it first")
        self._transport = transport
        self.refresh_routes()

    def detach_transport(self) -> None:
        """Go back to in-process delivery."""
        self._transport = None
        self.refresh_routes()

    def deliver_incoming(
        self,
        pattern: str,
        message: Any,
        *,
        headers: dict[str, str] | None = None,
        message_id: str | None = None,
        timeout: float | None = None,
    ) -> Coroutine[Any, Any, tuple[str, Any]]:
        """Deliver a message that arrived from a broker to this process's handlers:
        ``outcome, result = await bus.deliver_incoming(...)``.

        It takes the same path as a message produced here, with the middleware chain
        compiled for ``ctx.direction == "in"`` and ``ctx.headers`` set to ``headers``.
        Returns ``(outcome, result)``: outcome as in ``ctx.outcome``, result the query's
        (``None`` for publish and send). For a query the handler's exceptions (and
        :class:`NoHandlerError`) propagate so the transport can send them back; for publish
        and send they are logged, as locally. An unknown ``pattern`` raises ``ValueError``
        at the call (a plain method returning the coroutine).
        """
        route = self._incoming_routes.get(pattern)
        if route is None:
            raise ValueError(f"unknown pattern {pattern!r}")
        message_type = get_message_type(message)
        return run_incoming(route, message, message_type, headers, message_id, timeout)

    def deliver_local(
        self,
        pattern: str,
        message: Any,
        *,
        headers: dict[str, str] | None = None,
        message_id: str | None = None,
        timeout: float | None = None,
    ) -> Coroutine[Any, Any, tuple[str, Any]]:
        """Deprecated name of :meth:`deliver_incoming` (the name transports were told to
        call before 0.2); same arguments and result, with a ``DeprecationWarning``."""
        warnings.warn(
            "InMemoryCommBus.deliver_local is deprecated: call deliver_incoming",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.deliver_incoming(
            pattern, message, headers=headers, message_id=message_id, timeout=timeout
        )

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
        self._probe = None
        self._set_routes(None)
        self._registrations_changed()

    # ------------------------------------------------------------------ the three patterns

    async def publish(self, event: Any) -> None:
        """Deliver ``event`` to every subscriber of its type, concurrently.

        Returns when every subscriber has finished. Subscriber errors are logged, never
        raised. Cancelling the publisher cancels the subscribers still running.
        """
        message_type = get_message_type(event)
        outcome = self._publish_route(event, message_type, None)
        if outcome.__class__ is not str:  # a Resume or coroutine: still running
            try:
                await outcome
            except TransportError:
                raise
            except Exception as exc:
                # Only a transport's own awaitable, handed back by the step out on the
                # empty chain, raises here (every other route logs its handlers' errors):
                # it did not accept the event (see ToTransport; the try costs nothing
                # otherwise in Python >= 3.11).
                raise not_accepted("publish", message_type, exc) from exc

    async def send(self, command: Any) -> None:
        """Deliver ``command`` to its one handler and wait for it to finish.

        Handler errors are logged, not raised; a command with no handler is logged as a
        warning. Cancelling the sender cancels the handler.
        """
        message_type = get_message_type(command)
        outcome = self._send_route(command, message_type, None)
        if outcome.__class__ is not str:  # a Resume or coroutine: still running
            try:
                await outcome
            except TransportError:
                raise
            except Exception as exc:  # as in publish: the transport did not accept it
                raise not_accepted("send", message_type, exc) from exc

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
        result = self._query_route(query, get_message_type(query), timeout)
        running = result.__class__
        if running is Resume or running is CoroutineType:
            return await result
        return result
