"""How a message reaches this process's handlers: the last step of the bus's one run path.

Every message the bus delivers here, produced here or arriving from a transport, takes the
same path: the compiled middleware chain of its pattern and direction (:mod:`.chain`), then
one of the :class:`Delivery` steps below. The empty chain is no chain: the bus calls the
step directly (:meth:`~Delivery.to_subscribers`, :meth:`~Delivery.to_command_handler`,
:meth:`~Delivery.to_query_handler`), with no context, so a message no middleware wants
costs the handler call and little more; at the end of a chain the same deliveries record
on the message's context (the ``*_observed`` steps, :class:`~.chain.Step`).

The steps are plain functions following the :mod:`.eager` convention: they return the
outcome or result, or something for the caller to await (a :class:`~.eager.Resume` of a
handler that suspended, or a coroutine when there is more to do). A lone handler with no
hooks and no timer is simply awaited; handlers that must not cost a task or a timer unless
they suspend (the subscribers of a fan-out, a query's handler) are started eagerly.

Contracts (the public ones: the bus's docstring): the per-handler hooks run in a copy of
the caller's context, one per handler run; a failing hook is logged, never raised.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable
from contextvars import copy_context
from typing import Any

from ...types import LoggerProtocol
from .chain import Route, Step
from .eager import CoroutineType, Resume, resume_within, start, start_in
from .errors import NoHandlerError
from .handlers import HandlerEntry, command_failed, subscriber_failed
from .hooks import end_hooks, start_hooks
from .middleware import MiddlewareContext

__all__ = ["Delivery"]


class Delivery:
    """Runs messages to the handlers registered in ``subscribers`` and ``handlers``.

    The two tables belong to the bus, which registers into them; the engine only reads
    them, at each message (a subscription made during a publish affects the next one).
    """

    def __init__(
        self,
        subscribers: dict[str, tuple[HandlerEntry, ...]],
        handlers: dict[str, HandlerEntry],
        logger: LoggerProtocol,
    ) -> None:
        self._subscribers = self.subscribers = subscribers
        self._handlers = self.handlers = handlers
        self._logger = logger

    def step(self, pattern: str) -> Route:
        """The step that delivers a ``pattern`` message here on the empty chain."""
        if pattern == "publish":
            return self.to_subscribers
        if pattern == "send":
            return self.to_command_handler
        return self.to_query_handler

    def observed_step(self, pattern: str) -> Step:
        """The step that delivers a ``pattern`` message here at the end of a chain."""
        if pattern == "publish":
            return self.to_subscribers_observed
        if pattern == "send":
            return self.to_command_handler_observed
        return self.to_query_handler_observed

    # ------------------------------------------------------------------ the empty chain

    def to_subscribers(self, event: Any, message_type: str, timeout: float | None) -> Any:
        """Run every subscriber of ``event``'s type, concurrently; their errors are logged.
        Returns the outcome ("ok", "error", "no_handler") or a coroutine for it."""
        subs = self._subscribers.get(message_type)
        if not subs:
            return "no_handler"
        if len(subs) == 1:
            # Alone and unobserved, the subscriber needs no concurrency and no hooks: it is
            # simply called (awaited when async), for a fraction of the fan-out's cost.
            sub = subs[0]
            try:
                result = sub.fn(event)
            except Exception as exc:
                subscriber_failed(self._logger, message_type, sub, exc)
                return "error"
            if sub.is_async or (result is not None and inspect.isawaitable(result)):
                return self._await_subscriber(message_type, sub, result)
            return "ok"
        return self.fan_out(event, message_type, subs, None, [])

    def to_command_handler(self, command: Any, message_type: str, timeout: float | None) -> Any:
        """Run the handler of ``command``; its errors (and a missing handler) are logged.
        Returns the outcome or a coroutine for it."""
        handler = self._handlers.get(message_type)
        if handler is None:
            self._logger.warning("no_handler", pattern="send", message_type=message_type)
            return "no_handler"
        try:  # simply called (awaited when async), as a lone subscriber
            result = handler.fn(command)
        except Exception as exc:
            command_failed(self._logger, message_type, handler, exc)
            return "error"
        if handler.is_async or (result is not None and inspect.isawaitable(result)):
            return self._await_command(message_type, handler, result)
        return "ok"

    def to_query_handler(self, query: Any, message_type: str, timeout: float | None) -> Any:
        """Run the handler of ``query`` under ``timeout``: its result, or a
        :class:`~.eager.Resume` or coroutine for it; its errors are raised,
        :class:`NoHandlerError` when there is none.

        A result that is itself a coroutine object (an async handler returning one
        unawaited) is handed back inside a coroutine, so that the caller takes it for the
        value it is and does not await it."""
        handler = self._handlers.get(message_type)
        if handler is None:
            raise NoHandlerError(f"no handler registered for query type {message_type!r}")
        if handler.is_async:
            # eager.start() written out: the timer waits for the first suspension, so the
            # handler is started by hand, and the call to start() on top of the route's own
            # would cost a direct query some 5-10 % (benchmarks/bench_core_ab.py).
            coro: Any = handler.fn(query)
            try:
                pending = coro.send(None)
            except StopIteration as stop:
                result = stop.value
            else:
                resume = Resume(coro, pending)
                return resume if timeout is None else resume_within(resume, timeout)
        else:
            result = start(handler.fn, False, query)
            if result.__class__ is Resume:
                return result if timeout is None else resume_within(result, timeout)
        if result.__class__ is CoroutineType:
            return _value(result)
        return result

    # ------------------------------------------------------------------ at the end of a chain

    def to_subscribers_observed(
        self, event: Any, message_type: str, timeout: float | None, ctx: MiddlewareContext
    ) -> Any:
        """:meth:`to_subscribers` for a message on a chain (see :class:`~.chain.Step`)."""
        subs = self._subscribers.get(message_type)
        if not subs:
            ctx.outcome = "no_handler"
            return None
        return self.fan_out(event, message_type, subs, ctx, [])

    def to_command_handler_observed(
        self, command: Any, message_type: str, timeout: float | None, ctx: MiddlewareContext
    ) -> Any:
        """:meth:`to_command_handler` for a message on a chain."""
        handler = self._handlers.get(message_type)
        if handler is None:
            self._logger.warning("no_handler", pattern="send", message_type=message_type)
            ctx.outcome = "no_handler"
            return None
        return self._run_observed(handler, command, timeout, ctx)

    def to_query_handler_observed(
        self, query: Any, message_type: str, timeout: float | None, ctx: MiddlewareContext
    ) -> Any:
        """:meth:`to_query_handler` for a message on a chain."""
        handler = self._handlers.get(message_type)
        if handler is None:
            ctx.outcome = "no_handler"
            raise NoHandlerError(f"no handler registered for query type {message_type!r}")
        return self._run_observed(handler, query, timeout, ctx)

    # ------------------------------------------------------------------ handler runs

    async def _await_subscriber(
        self, message_type: str, sub: HandlerEntry, running: Awaitable[Any]
    ) -> str:
        """Await a lone subscriber's run in the caller's task; its error is logged."""
        try:
            await running
        except Exception as exc:
            subscriber_failed(self._logger, message_type, sub, exc)
            return "error"
        return "ok"

    async def _await_command(
        self, message_type: str, handler: HandlerEntry, running: Awaitable[Any]
    ) -> str:
        """Await a command handler's run in the caller's task; its error is logged."""
        try:
            await running
        except Exception as exc:
            command_failed(self._logger, message_type, handler, exc)
            return "error"
        return "ok"

    def _run_observed(
        self, handler: HandlerEntry, message: Any, timeout: float | None, ctx: MiddlewareContext
    ) -> Any:
        """Run a command's or query's handler for a message on a chain: its name and the
        outcome recorded on ``ctx``, the handler hooks around it, its errors raised.
        Returns its result or, once it suspended, a coroutine for it (a result that is
        itself a coroutine object comes back inside one, as in :meth:`to_query_handler`)."""
        ctx.handlers.append(handler.name)
        hooks = ctx.hooks
        tokens: Any = None
        context = None
        if hooks:
            context = copy_context()
            tokens = context.run(start_hooks, hooks, ctx, handler.name, self._logger)
        try:
            if context is not None:
                result = start_in(context, handler.fn, handler.is_async, message)
            else:
                result = start(handler.fn, handler.is_async, message)
        except BaseException as exc:
            self._observed_failed(handler, timeout, ctx, exc)
            if hooks:
                end_hooks(hooks, ctx, tokens, exc, self._logger)
            raise
        if result.__class__ is Resume:
            return self._finish_observed(handler, result, timeout, ctx, hooks, tokens)
        if hooks:
            end_hooks(hooks, ctx, tokens, None, self._logger)
        if result.__class__ is CoroutineType:
            return _value(result)
        return result

    async def _finish_observed(
        self,
        handler: HandlerEntry,
        resume: Resume,
        timeout: float | None,
        ctx: MiddlewareContext,
        hooks: tuple[Any, ...],
        tokens: Any,
    ) -> Any:
        """The rest of :meth:`_run_observed` once the handler suspended."""
        error: BaseException | None = None
        try:
            return await resume_within(resume, timeout)
        except BaseException as exc:
            error = exc
            self._observed_failed(handler, timeout, ctx, exc)
            raise
        finally:
            if hooks:
                end_hooks(hooks, ctx, tokens, error, self._logger)

    def _observed_failed(
        self,
        handler: HandlerEntry,
        timeout: float | None,
        ctx: MiddlewareContext,
        exc: BaseException,
    ) -> None:
        if isinstance(exc, TimeoutError) and timeout is not None:
            ctx.outcome = "timeout"
        elif not isinstance(exc, asyncio.CancelledError):
            ctx.outcome = "error"
        if ctx.pattern == "send" and isinstance(exc, Exception):
            command_failed(self._logger, ctx.message_type, handler, exc)

    def fan_out(
        self,
        event: Any,
        message_type: str,
        subs: tuple[HandlerEntry, ...],
        ctx: MiddlewareContext | None,
        errors: list[BaseException],
    ) -> Any:
        """Run every subscriber of one publish, concurrently; the outcome, or a
        coroutine for it while some still run. The subscribers' errors (already logged)
        are appended to ``errors``.

        Subscribers start in order. While no started subscriber is suspended, the next one
        runs eagerly in the publisher's task (most finish there without a task). Once one
        has suspended it keeps the publisher's task, and every later async subscriber starts
        in a task of its own: a started coroutine never moves to another task, because what
        it bound to the current task (``asyncio.timeout``, a ``TaskGroup``) must stay right.
        """
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
                    tokens = context.run(start_hooks, hooks, ctx, sub.name, self._logger)
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
                    if context is None or sub.is_async:  # its coroutine: made, not started
                        awaitable = sub.fn(event)
                    else:  # a plain handler runs now, in its own context as the others
                        awaitable = context.run(sub.fn, event)
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
                subscriber_failed(self._logger, message_type, sub, exc)
                errors.append(exc)
                if ctx is not None and hooks:
                    end_hooks(hooks, ctx, tokens, exc, self._logger)
                continue
            if ctx is not None and hooks:
                end_hooks(hooks, ctx, tokens, None, self._logger)
        if inline is None and not tasks:
            return self._fanned_out(errors, len(subs), ctx)
        return self._fan_out_rest(message_type, inline, tasks, errors, len(subs), ctx, hooks)

    async def _fan_out_rest(
        self,
        message_type: str,
        inline: tuple[HandlerEntry, Any, Any] | None,
        tasks: list[asyncio.Task[BaseException | None]],
        errors: list[BaseException],
        count: int,
        ctx: MiddlewareContext | None,
        hooks: tuple[Any, ...],
    ) -> Any:
        """Wait for the subscribers of a fan-out that suspended (the inline one first)."""
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
        return self._fanned_out(errors, count, ctx)

    @staticmethod
    def _fanned_out(errors: list[BaseException], count: int, ctx: MiddlewareContext | None) -> Any:
        """The end of a fan-out: its outcome without a context; with one, the subscribers'
        errors raised for the ``after`` hooks (one as itself, several as a group)."""
        if ctx is None:
            return "error" if errors else "ok"
        if not errors:
            return None
        ctx.outcome = "error"
        if len(errors) == 1:
            raise errors[0]
        raise ExceptionGroup(
            f"{len(errors)} of {count} subscribers failed",
            [e for e in errors if isinstance(e, Exception)],
        )

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
            subscriber_failed(self._logger, message_type, sub, exc)
            error = exc
        except BaseException as exc:  # cancellation: end the hooks, then let it through
            if hooks and ctx is not None:
                end_hooks(hooks, ctx, tokens, exc, self._logger)
            raise
        if hooks and ctx is not None:
            end_hooks(hooks, ctx, tokens, error, self._logger)
        return error


async def _value(value: Any) -> Any:
    return value
