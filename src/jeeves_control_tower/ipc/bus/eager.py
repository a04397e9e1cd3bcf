"""Eager handler execution: run a handler up to its first suspension without a task.

``await handler(msg)`` is cheap; wrapping it in ``asyncio.gather`` or ``asyncio.wait_for``
costs two orders of magnitude more because each creates a task and a timer. Most handlers
finish without ever suspending, so the bus starts every handler coroutine by hand
(:func:`start`), and only when it does suspend does it pay for a task or a timer, by
awaiting the returned :class:`Resume`. The behaviour is the same as awaiting the coroutine
directly: values, exceptions and cancellation pass through unchanged.

The same convention carries a message along the bus's run path (:mod:`.delivery`,
:mod:`.chain`): each step is a plain call that returns its value, or, when something is
still running, a :class:`Resume` or a coroutine (work that must run as one: the middleware
chain, a transport call, the rest of a fan-out); only then does the caller await
(``r.__class__ is Resume or r.__class__ is CoroutineType``: two identity checks, cheaper
than any call). A value that is itself a coroutine object never travels this way (see
:func:`~.delivery.Delivery.to_query_handler`).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine, Generator
from contextvars import Context
from types import CoroutineType
from typing import Any

__all__ = ["CoroutineType", "Resume", "is_async_callable", "resume_within", "start", "start_in"]


class Resume:
    """An awaitable that continues a coroutine which already yielded ``pending``.

    Await it exactly once (directly, or inside a task). When ``context`` is given, every
    step of the coroutine runs inside it, so the handler keeps seeing its own context
    variables (its span, for instance) whichever task drives it.
    """

    __slots__ = ("context", "coro", "pending")

    def __init__(
        self, coro: Coroutine[Any, Any, Any], pending: Any, context: Context | None = None
    ) -> None:
        self.coro = coro
        self.pending = pending
        self.context = context

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self.coro
        pending = self.pending
        self.pending = None
        run = self.context.run if self.context is not None else None
        while True:
            try:
                value = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation or an error thrown in by the loop
                try:
                    pending = run(coro.throw, exc) if run else coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = run(coro.send, value) if run else coro.send(value)
                except StopIteration as stop:
                    return stop.value


def is_async_callable(fn: Any) -> bool:
    """True for coroutine functions, including callable objects with an async ``__call__``
    (not a class: calling one makes an instance, whatever its instances' ``__call__``)."""
    if inspect.iscoroutinefunction(fn):
        return True
    if isinstance(fn, type):
        return False
    call = getattr(fn, "__call__", None)  # noqa: B004 - we want the bound dunder itself
    return call is not None and inspect.iscoroutinefunction(call)


async def _await_any(awaitable: Any) -> Any:
    return await awaitable


def start(fn: Callable[[Any], Any], is_async: bool, message: Any) -> Any:
    """Call ``fn(message)`` and run it until it finishes or first suspends.

    Returns the handler's result, or a :class:`Resume` to await for the rest. Exceptions
    raised before the first suspension propagate from here. A synchronous ``fn`` that
    returns an awaitable is treated like an async one.
    """
    if is_async:
        coro = fn(message)
    else:
        result = fn(message)
        if result is None or not inspect.isawaitable(result):
            return result
        coro = result if inspect.iscoroutine(result) else _await_any(result)
    try:
        pending = coro.send(None)
    except StopIteration as stop:
        return stop.value
    return Resume(coro, pending)


def start_in(context: Context, fn: Callable[[Any], Any], is_async: bool, message: Any) -> Any:
    """:func:`start` with every step of the handler running inside ``context``."""
    if is_async:
        # Calling a coroutine function runs none of its code: only its steps need the
        # context (perf: no frame of start() inside it).
        coro = fn(message)
        try:
            pending = context.run(coro.send, None)
        except StopIteration as stop:
            return stop.value
        return Resume(coro, pending, context)
    result = context.run(start, fn, False, message)
    if result.__class__ is Resume:
        result.context = context
    return result


async def resume_within(resume: Resume, timeout: float | None) -> Any:
    """Drive a handler that suspended (the :class:`Resume` :func:`start` returned) to its
    end, in the calling task, under ``timeout`` seconds when one is given: when it expires
    the handler is cancelled and ``TimeoutError`` raised, as ``asyncio.timeout`` does."""
    if timeout is None:
        return await resume
    async with asyncio.timeout(timeout):
        return await resume
