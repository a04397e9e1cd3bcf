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
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Callable, Coroutine
from contextvars import copy_context
from typing import Any, Protocol, runtime_checkable

from ..logging import ensure_logger
from ..types import LoggerProtocol
from .eager import Resume, is_async_callable, start, start_in
from .messages import HandlerFunc, get_message_type
from .middleware import CompiledChain, Middleware, MiddlewareContext, validate_middleware

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


class NoHandlerError(ValueError):
    """A query has no handler registered for its type."""


class QueryAbortedError(ValueError):
    """A middleware's ``before`` hook returned ``None`` for a query."""


class TransportError(RuntimeError):
    """A transport could not accept a publish or send (broker down and buffer full, say).

    Raised to the caller: a message that did not leave is never dropped silently."""


@runtime_checkable
class CommBusProtocol(Protocol):
    """What the coordinator and adapters need from a bus."""

    async def publish(self, event: Any) -> None: ...

    async def send(self, command: Any) -> None: ...

    async def query(self, query: Any, timeout: float | None = None) -> Any: ...

    def subscribe(self, event_type: str, handler: HandlerFunc) -> Callable[[], None]: ...

    def register_handler(self, message_type: str, handler: HandlerFunc) -> None: ...

    def has_handler(self, message_type: str) -> bool: ...


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


class _Handler:
    """A registered subscriber or handler, with what the hot path needs precomputed."""

    __slots__ = ("fn", "is_async", "name")

    def __init__(self, fn: HandlerFunc) -> None:
        self.fn = fn
        self.is_async = is_async_callable(fn)
        self.name = _handler_name(fn)


def _handler_name(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(type(fn), "__qualname__", None)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module and name else str(name or repr(fn))


def _check_name(value: Any, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")


def _check_handler(handler: Any) -> None:
    if not callable(handler):
        raise TypeError(f"handler must be callable, got {type(handler).__name__}")


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

        Keyword arguments beyond the reference signature configure the built-in telemetry
        and are handed to :func:`jeeves_control_tower.observability.instrument_bus`:
        ``instrument`` (``True`` by default when the observability extra is installed,
        ``False`` turns it off), ``tracer_provider``, ``registry``, ``flow``, ...
        """
        _check_timeout(query_timeout, "query_timeout")
        self._query_timeout = float(query_timeout)
        self._logger = ensure_logger(logger, "jeeves_control_tower.ipc")
        self._subscribers: dict[str, tuple[_Handler, ...]] = {}
        self._handlers: dict[str, _Handler] = {}
        self._middlewares: list[Any] = []
        self._chain: CompiledChain | None = None
        self._transport: Transport | None = None
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
        _check_name(event_type, "event_type")
        _check_handler(handler)
        entry = _Handler(handler)
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
        _check_name(message_type, "message_type")
        _check_handler(handler)
        if message_type in self._handlers:
            raise ValueError(f"a handler is already registered for {message_type!r}")
        self._handlers[message_type] = _Handler(handler)
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
        _check_handler(listener)
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

    def add_middleware(self, middleware: Middleware) -> None:
        """Append ``middleware`` to the chain (it becomes the innermost)."""
        validate_middleware(middleware)
        self._middlewares.append(middleware)
        self._rebuild_chain()

    def remove_middleware(self, middleware: Any) -> bool:
        """Remove ``middleware`` from the chain; ``True`` if it was there."""
        for i, mw in enumerate(self._middlewares):
            if mw is middleware:
                del self._middlewares[i]
                self._rebuild_chain()
                return True
        return False

    def _rebuild_chain(self) -> None:
        chain = CompiledChain.build(self._middlewares)
        if chain is None and self._transport is not None:
            chain = CompiledChain.empty()  # a transport needs a context per message
        self._chain = chain

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
        self._rebuild_chain()

    def detach_transport(self) -> None:
        """Go back to in-process delivery."""
        self._transport = None
        self._rebuild_chain()

    async def deliver_local(
        self,
        pattern: str,
        message: Any,
        *,
        headers: dict[str, str] | None = None,
        message_id: str | None = None,
        timeout: float | None = None,
    ) -> tuple[str, Any]:
        """Deliver a message that arrived from a broker to this process's handlers.

        Runs the middleware chain with ``ctx.direction == "in"`` and ``ctx.headers`` set to
        ``headers``. Returns ``(outcome, result)``: outcome as in ``ctx.outcome``; for a
        query the handler's exceptions (and :class:`NoHandlerError`) propagate so the
        transport can send them back; for publish and send they are logged, as locally.
        """
        if pattern not in ("publish", "send", "query"):
            raise ValueError(f"unknown pattern {pattern!r}")
        chain = self._chain or CompiledChain.empty()
        ctx = MiddlewareContext(
            message, get_message_type(message), pattern=pattern, message_id=message_id
        )
        ctx.direction = "in"
        ctx.headers = headers
        ctx.hooks = chain.hooks
        if self._transport is not None:
            ctx.system = getattr(self._transport, "system", ctx.system)
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
        self._rebuild_chain()  # an attached transport keeps its (empty) chain
        self._registrations_changed()

    # ------------------------------------------------------------------ publish

    async def publish(self, event: Any) -> None:
        """Deliver ``event`` to every subscriber of its type, concurrently.

        Returns when every subscriber has finished. Subscriber errors are logged, never
        raised. Cancelling the publisher cancels the subscribers still running.
        """
        message_type = get_message_type(event)
        chain = self._chain
        if chain is not None:
            await self._run_chain("publish", event, message_type, chain, None)
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

    async def _fan_out(
        self,
        event: Any,
        message_type: str,
        subs: tuple[_Handler, ...],
        ctx: MiddlewareContext | None,
    ) -> list[BaseException]:
        """Run every subscriber of one publish, concurrently; return their errors (logged).

        Subscribers start in order. While no started subscriber is suspended, the next one
        runs eagerly in the publisher's task (most finish there without a task). Once one
        has suspended it keeps the publisher's task, and every later async subscriber starts
        in a task of its own: a started coroutine never moves to another task, because what
        it bound to the current task (``asyncio.timeout``, a ``TaskGroup``) must stay right.
        """
        errors: list[BaseException] = []
        hooks = ctx.hooks if ctx is not None else ()
        inline: tuple[_Handler, Any, Any] | None = None
        tasks: list[asyncio.Task[BaseException | None]] = []
        for sub in subs:
            context = None
            tokens: Any = None
            if ctx is not None:
                ctx.handlers.append(sub.name)
                if hooks:
                    context = copy_context()
                    tokens = context.run(self._hooks_start, hooks, ctx, sub.name)
            try:
                if inline is None:
                    if context is not None:
                        result = start_in(context, sub.fn, sub.is_async, event)
                    else:
                        result = start(sub.fn, sub.is_async, event)
                    if result.__class__ is Resume:
                        inline = (sub, result, tokens)
                        continue
                else:  # the publisher's task is taken: this one gets a task of its own
                    awaitable = sub.fn(event)  # an async handler's coroutine: made, not started
                    if sub.is_async or inspect.isawaitable(awaitable):
                        tasks.append(
                            asyncio.get_running_loop().create_task(
                                self._finish_subscriber(
                                    message_type, sub, awaitable, ctx, hooks, tokens
                                ),
                                context=context,
                            )
                        )
                        continue
            except Exception as exc:
                self._subscriber_failed(message_type, sub, exc)
                errors.append(exc)
                if hooks:
                    assert ctx is not None
                    self._hooks_end(hooks, ctx, tokens, exc)
                continue
            if hooks:
                assert ctx is not None
                self._hooks_end(hooks, ctx, tokens, None)
        if inline is None and not tasks:
            return errors
        try:
            if inline is not None:
                sub, resume, tokens = inline
                error = await self._finish_subscriber(message_type, sub, resume, ctx, hooks, tokens)
                if error is not None:
                    errors.append(error)
            if tasks:
                for error in await asyncio.gather(*tasks):
                    if error is not None:
                        errors.append(error)
        except BaseException:
            # Cancelled (or worse): take the subscriber tasks down with us, leave none behind.
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
            raise
        return errors

    async def _finish_subscriber(
        self,
        message_type: str,
        sub: _Handler,
        awaitable: Any,
        ctx: MiddlewareContext | None,
        hooks: tuple[Any, ...],
        tokens: Any,
    ) -> BaseException | None:
        error: BaseException | None = None
        try:
            await awaitable
        except Exception as exc:
            self._subscriber_failed(message_type, sub, exc)
            error = exc
        except BaseException as exc:  # cancellation: end the hooks, then let it through
            if hooks and ctx is not None:
                self._hooks_end(hooks, ctx, tokens, exc)
            raise
        if hooks and ctx is not None:
            self._hooks_end(hooks, ctx, tokens, error)
        return error

    def _subscriber_failed(self, message_type: str, sub: _Handler, exc: BaseException) -> None:
        self._logger.error(
            "subscriber_failed",
            message_type=message_type,
            handler=sub.name,
            error_type=type(exc).__name__,
            error=str(exc),
        )

    # ------------------------------------------------------------------ send

    async def send(self, command: Any) -> None:
        """Deliver ``command`` to its one handler and wait for it to finish.

        Handler errors are logged, not raised; a command with no handler is logged as a
        warning. Cancelling the sender cancels the handler.
        """
        message_type = get_message_type(command)
        chain = self._chain
        if chain is not None:
            await self._run_chain("send", command, message_type, chain, None)
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

    def _send_failed(self, message_type: str, handler: _Handler, exc: BaseException) -> None:
        self._logger.error(
            "command_failed",
            message_type=message_type,
            handler=handler.name,
            error_type=type(exc).__name__,
            error=str(exc),
        )

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
            _check_timeout(timeout, "timeout")
        message_type = get_message_type(query)
        chain = self._chain
        if chain is not None:
            return await self._run_chain("query", query, message_type, chain, timeout)
        handler = self._handlers.get(message_type)
        if handler is None:
            raise NoHandlerError(f"no handler registered for query type {message_type!r}")
        result = start(handler.fn, handler.is_async, query)
        if result.__class__ is Resume:
            async with asyncio.timeout(timeout):
                return await result
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
        ctx = MiddlewareContext(message, message_type, pattern=pattern)
        ctx.hooks = chain.hooks
        if self._transport is not None:
            ctx.direction = "out"
            ctx.system = getattr(self._transport, "system", ctx.system)
        return self._run_ctx(ctx, message, chain, timeout)

    async def _run_ctx(
        self,
        ctx: MiddlewareContext,
        message: Any,
        chain: CompiledChain,
        timeout: float | None,
    ) -> Any:
        pattern = ctx.pattern
        message_type = ctx.message_type
        result: Any = None
        error: BaseException | None = None
        called = 0
        handled = False  # True once handler errors are our own to log (they already are)
        try:
            for before, is_async in chain.befores:
                called += 1
                if before is None:
                    continue
                out = before(ctx, message)
                if is_async:
                    out = await out
                if out is None:
                    ctx.outcome = "aborted"
                    break
                message = ctx.message = out
            else:
                handled = True
                result = await self._deliver(pattern, ctx, message, chain, timeout)
        except BaseException as exc:
            error = exc
            if ctx.outcome == "ok":
                ctx.outcome = (
                    "timeout"
                    if isinstance(exc, TimeoutError)
                    else "cancelled"
                    if isinstance(exc, asyncio.CancelledError)
                    else "error"
                )
        skip = len(chain.afters) - called
        for after, is_async, name in chain.afters:
            if skip:
                skip -= 1
                continue
            if after is None:
                continue
            try:
                out = after(ctx, message, result, error)
                if is_async:
                    out = await out
                result = out
            except Exception as exc:
                self._logger.error(
                    "middleware_after_failed",
                    middleware=name,
                    message_type=message_type,
                    error_type=type(exc).__name__,
                    error=str(exc),
                )
        if error is not None:
            if pattern == "query" or not isinstance(error, Exception):
                raise error
            if isinstance(error, TransportError):
                raise error  # the message never left: fail loudly, never drop it
            if not handled:
                self._logger.error(
                    "message_failed",
                    pattern=pattern,
                    message_type=message_type,
                    error_type=type(error).__name__,
                    error=str(error),
                )
            return None
        if ctx.outcome == "aborted":
            self._logger.debug("message_aborted", pattern=pattern, message_type=message_type)
            if pattern == "query":
                raise QueryAbortedError(f"query {message_type!r} was aborted by middleware")
        return result

    async def _deliver(
        self,
        pattern: str,
        ctx: MiddlewareContext,
        message: Any,
        chain: CompiledChain,
        timeout: float | None,
    ) -> Any:
        """Run the handler(s) for one message that passed the ``before`` hooks.

        Sets ``ctx.outcome``; handler errors of a publish or send are logged and kept off
        the exception path (the ``after`` hooks see them as ``error``)."""
        message_type = ctx.message_type
        transport = self._transport
        if ctx.direction == "out" and transport is not None:
            ctx.handlers.append(f"transport:{type(transport).__name__}")
            if pattern == "query":
                assert timeout is not None
                return await transport.query(ctx, message, timeout)
            try:
                if pattern == "publish":
                    return await transport.publish(ctx, message)
                return await transport.send(ctx, message)
            except TransportError:
                raise
            except Exception as exc:
                raise TransportError(
                    f"{pattern} {message_type!r} was not accepted by the transport:"
                    f" {type(exc).__name__}: {exc}"
                ) from exc
        if pattern == "publish":
            subs = self._subscribers.get(message_type)
            if not subs:
                ctx.outcome = "no_handler"
                return None
            errors = await self._fan_out(message, message_type, subs, ctx)
            if errors:
                ctx.outcome = "error"
                if len(errors) == 1:
                    raise errors[0]
                raise ExceptionGroup(
                    f"{len(errors)} of {len(subs)} subscribers failed",
                    [e for e in errors if isinstance(e, Exception)],
                )
            return None
        handler = self._handlers.get(message_type)
        if handler is None:
            ctx.outcome = "no_handler"
            if pattern == "send":
                self._logger.warning("no_handler", pattern="send", message_type=message_type)
                return None
            raise NoHandlerError(f"no handler registered for query type {message_type!r}")
        ctx.handlers.append(handler.name)
        hooks = ctx.hooks
        tokens: Any = None
        context = None
        if hooks:
            context = copy_context()
            tokens = context.run(self._hooks_start, hooks, ctx, handler.name)
        error: BaseException | None = None
        try:
            if context is not None:
                result = start_in(context, handler.fn, handler.is_async, message)
            else:
                result = start(handler.fn, handler.is_async, message)
            if result.__class__ is Resume:
                if timeout is not None:
                    async with asyncio.timeout(timeout):
                        result = await result
                else:
                    result = await result
            return result
        except BaseException as exc:
            error = exc
            if isinstance(exc, TimeoutError) and timeout is not None:
                ctx.outcome = "timeout"
            elif not isinstance(exc, asyncio.CancelledError):
                ctx.outcome = "error"
            if pattern == "send" and isinstance(exc, Exception):
                self._send_failed(message_type, handler, exc)
            raise
        finally:
            if hooks:
                self._hooks_end(hooks, ctx, tokens, error)

    def _hooks_start(self, hooks: tuple[Any, ...], ctx: MiddlewareContext, name: str) -> list[Any]:
        tokens = []
        for hook in hooks:
            try:
                tokens.append(hook.handler_start(ctx, name))
            except Exception as exc:
                tokens.append(None)
                self._hook_failed(hook, "handler_start", exc)
        return tokens

    def _hooks_end(
        self,
        hooks: tuple[Any, ...],
        ctx: MiddlewareContext,
        tokens: list[Any],
        error: BaseException | None,
    ) -> None:
        for hook, token in zip(reversed(hooks), reversed(tokens), strict=True):
            try:
                hook.handler_end(ctx, token, error)
            except Exception as exc:
                self._hook_failed(hook, "handler_end", exc)

    def _hook_failed(self, hook: Any, where: str, exc: BaseException) -> None:
        self._logger.error(
            "middleware_hook_failed",
            middleware=type(hook).__name__,
            hook=where,
            error_type=type(exc).__name__,
            error=str(exc),
        )


def _check_timeout(value: Any, what: str) -> None:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")


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
