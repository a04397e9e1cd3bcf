"""How one message is delivered: the middleware chain, the fan-out, the handler run.

:class:`Delivery` is the engine :class:`~jeeves_control_tower.ipc.commbus.InMemoryCommBus`
inherits: the bus keeps registration, the transport seam and the public API; this module
runs a message that has a :class:`~jeeves_control_tower.ipc.middleware.MiddlewareContext`
through the ``before`` hooks, to its handler(s) (or to the attached transport), and back
through the ``after`` hooks. Same-object attribute access keeps the hot path as it was.

Contracts (see the bus's docstring for the public ones): handlers are started eagerly and
get a task or a timer only when they suspend; the per-handler hooks (``handler_start`` /
``handler_end``) run in a copy of the caller's context, one per handler run; a failing
hook is logged, never raised into the message path.
"""

from __future__ import annotations

import asyncio
import inspect
from contextvars import copy_context
from typing import Any

from ..types import LoggerProtocol
from .eager import Resume, resume_within, start, start_in
from .errors import NoHandlerError, QueryAbortedError, TransportError
from .handlers import HandlerEntry
from .middleware import CompiledChain, MiddlewareContext
from .transport import Transport

__all__ = ["Delivery", "not_accepted"]


def not_accepted(pattern: str, message_type: str, exc: Exception) -> TransportError:
    """What a publish or send raises when its transport failed with ``exc``."""
    return TransportError(
        f"{pattern} {message_type!r} was not accepted by the transport: {type(exc).__name__}: {exc}"
    )


class Delivery:
    """Message delivery for a bus holding these registries (set by the bus's ``__init__``).

    Event-loop-thread only, like the bus."""

    _logger: LoggerProtocol
    _subscribers: dict[str, tuple[HandlerEntry, ...]]
    _handlers: dict[str, HandlerEntry]
    _transport: Transport | None
    _transport_label: str  # "transport:<class name>", the handler name of an outgoing message
    _transport_system: str  # its ``system`` (messaging.system of what it carries)

    async def _fan_out(
        self,
        event: Any,
        message_type: str,
        subs: tuple[HandlerEntry, ...],
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
        inline: tuple[HandlerEntry, Any, Any] | None = None
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
        sub: HandlerEntry,
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

    def _subscriber_failed(self, message_type: str, sub: HandlerEntry, exc: BaseException) -> None:
        self._logger.error(
            "subscriber_failed",
            message_type=message_type,
            handler=sub.name,
            error_type=type(exc).__name__,
            error=str(exc),
        )

    def _send_failed(self, message_type: str, handler: HandlerEntry, exc: BaseException) -> None:
        self._logger.error(
            "command_failed",
            message_type=message_type,
            handler=handler.name,
            error_type=type(exc).__name__,
            error=str(exc),
        )

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
            ctx.handlers.append(self._transport_label)
            return await self._through(transport, pattern, ctx, message, timeout)
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
                result = await resume_within(result, timeout)
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

    def _out_context(self, pattern: str, message: Any, message_type: str) -> MiddlewareContext:
        """The context of a message going out on the direct path (no middleware applies)."""
        system = self._transport_system
        return MiddlewareContext(message, message_type, None, None, pattern, None, "out", system)

    async def _through(
        self,
        transport: Transport,
        pattern: str,
        ctx: MiddlewareContext,
        message: Any,
        timeout: float | None,
    ) -> Any:
        """Hand a message to the transport: a query's outcome is the remote one (result or
        exception); a publish or send the transport did not accept raises
        :class:`TransportError` (never dropped silently)."""
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
            raise not_accepted(pattern, ctx.message_type, exc) from exc

    async def _deliver_direct(
        self, pattern: str, message: Any, message_type: str, timeout: float | None
    ) -> tuple[str, Any]:
        """A message from a transport that no middleware applies to, delivered as the
        bus's own direct path does, plus the outcome :meth:`deliver_local` reports."""
        if pattern == "publish":
            subs = self._subscribers.get(message_type)
            if not subs:
                return "no_handler", None
            if len(subs) == 1:
                sub = subs[0]
                try:
                    result = start(sub.fn, sub.is_async, message)
                    if result.__class__ is Resume:
                        await result
                except Exception as exc:
                    self._subscriber_failed(message_type, sub, exc)
                    return "error", None
                return "ok", None
            errors = await self._fan_out(message, message_type, subs, None)
            return ("error" if errors else "ok"), None
        handler = self._handlers.get(message_type)
        if handler is None:
            if pattern == "send":
                self._logger.warning("no_handler", pattern="send", message_type=message_type)
                return "no_handler", None
            raise NoHandlerError(f"no handler registered for query type {message_type!r}")
        try:
            result = start(handler.fn, handler.is_async, message)
            if result.__class__ is Resume:
                result = await resume_within(result, timeout)
        except Exception as exc:
            if pattern == "query":
                raise
            self._send_failed(message_type, handler, exc)
            return "error", None
        return "ok", result

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
