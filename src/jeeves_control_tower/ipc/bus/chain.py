"""The middleware chain: compiled once when the middleware list changes, run per message.

:class:`~.compiled.CompiledChain` turns a middleware list into the bound hooks each message
runs (``before`` in order, ``after`` in reverse, the :class:`~.middleware.HandlerHook`
pairs), per ``(pattern, direction)`` when some middleware has ``applies_to``.
:class:`ChainRoute` is a compiled chain bound to the step it leads to (the handlers, or the
transport): it makes the message's :class:`~.middleware.MiddlewareContext` and runs the
hooks around that step.

A message no middleware applies to has the empty chain, which compiles to no route at all:
the bus calls the step directly (see :mod:`.delivery`), with no context made.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Protocol

from ...types import LoggerProtocol
from .compiled import CompiledChain
from .eager import CoroutineType, Resume
from .errors import QueryAbortedError, TransportError
from .middleware import MiddlewareContext, validate_middleware
from .observation import enter, outcome_of, probe_failed

__all__ = ["ChainRoute", "CompiledChain", "Route", "Step", "validate_middleware"]


class Route(Protocol):
    """What a message produced here runs, compiled once: ``route(message, message_type,
    timeout)`` returns the outcome ("ok", "error", "no_handler") of a publish or send or
    the result of a query, or, while something still runs, a :class:`~.eager.Resume` or a
    coroutine to await for it (the :mod:`.eager` convention). On the empty chain it is the
    step itself (:meth:`~.delivery.Delivery.step`), else :meth:`ChainRoute.enter`."""

    def __call__(self, message: Any, message_type: str, timeout: float | None, /) -> Any: ...


class Step(Protocol):
    """The step at the end of a chain: it delivers the message to its handler(s) or hands
    it to the transport, recording on ``ctx`` (outcome, handler names; the handler hooks
    run), and returns the result (``None`` for a publish) or a :class:`~.eager.Resume` or
    coroutine to await for it. Handler errors, already logged, are raised so that the
    ``after`` hooks see them."""

    def __call__(
        self,
        message: Any,
        message_type: str,
        timeout: float | None,
        ctx: MiddlewareContext,
        /,
    ) -> Any: ...


class ChainRoute:
    """A non-empty chain bound to its :class:`Step`, for one pattern and direction.

    :meth:`enter` (a :class:`Route`) and :meth:`enter_incoming` make the message's context
    and return the run to await. Event-loop-thread only.
    """

    __slots__ = (
        "afters",
        "befores",
        "direction",
        "hooks",
        "is_query",
        "logger",
        "pattern",
        "probe",
        "step",
        "sync",
        "system",
    )

    def __init__(
        self,
        chain: CompiledChain,
        pattern: str,
        direction: str,
        system: str,
        step: Step,
        logger: LoggerProtocol,
        probe: Any = None,
    ) -> None:
        self.befores = chain.befores
        self.afters = chain.afters
        self.hooks = chain.hooks
        self.pattern = pattern
        self.is_query = pattern == "query"
        self.direction = direction
        self.system = system
        self.step = step
        self.logger = logger
        self.probe = probe  # a MessageProbe (see ipc.telemetry), told once per message
        # Every hook a plain function: the message runs without a coroutine of its own
        # until something suspends (see enter).
        self.sync = not any(is_async for _, is_async in chain.befores) and not any(
            is_async for _, is_async, _ in chain.afters
        )

    def enter(self, message: Any, message_type: str, timeout: float | None) -> Any:
        """Start a message produced here on this chain (a :class:`Route`): its run, to
        await, or, when every hook is a plain function and the step finished without
        suspending, already its outcome (publish, send) or result (query), with the same
        hooks run in the same order and the same errors raised as by :meth:`run`."""
        ctx = MiddlewareContext(
            message, message_type, None, None, self.pattern, None, self.direction, self.system
        )
        ctx.hooks = self.hooks
        probe = self.probe
        if probe is not None:  # observation.enter(), written out (perf)
            inflight = probe.inflight
            try:
                inflight[self.pattern] += 1
            except KeyError:
                inflight[self.pattern] = 1
        if not self.sync:
            return self.run(ctx, message, timeout)
        error: BaseException | None = None
        result: Any = None
        called = 0
        reached = False
        try:
            for before, _ in self.befores:
                called += 1
                if before is None:
                    continue
                out = before(ctx, message)
                if out is None:
                    ctx.outcome = "aborted"
                    break
                message = ctx.message = out
            else:
                reached = True
                pending = self.step(message, ctx.message_type, timeout, ctx)
                if pending.__class__ is Resume or pending.__class__ is CoroutineType:
                    return self._resume(ctx, message, pending, called)
                result = pending
        except BaseException as exc:
            error = exc
            _failed(ctx, exc)
        result = self._afters_sync(ctx, message, result, error, called)
        if probe is not None:
            try:  # _report(), written out (perf: the common ending)
                probe.message(
                    self.pattern, self.direction, self.system, ctx.message_type, ctx.started,
                    ctx.outcome, ctx.handlers, error, ctx.trace_id, ctx.message,
                )  # fmt: skip
            except Exception as exc:
                probe_failed(self.logger, exc)
        if error is not None or ctx.outcome == "aborted":
            result = self._conclude(ctx, result, error, reached)
        elif not self.is_query:  # what _conclude returns then, written out (perf)
            return ctx.outcome
        if self.is_query and (result.__class__ is Resume or result.__class__ is CoroutineType):
            return _value(result)  # a result that is itself awaitable is never awaited
        return result

    async def _resume(self, ctx: MiddlewareContext, message: Any, pending: Any, called: int) -> Any:
        """The rest of :meth:`enter` once the step suspended: await it, then the hooks."""
        error: BaseException | None = None
        result: Any = None
        try:
            result = await pending
        except BaseException as exc:
            error = exc
            _failed(ctx, exc)
        result = self._afters_sync(ctx, message, result, error, called)
        self._report(ctx, error)
        return self._conclude(ctx, result, error, True)

    def _afters_sync(
        self,
        ctx: MiddlewareContext,
        message: Any,
        result: Any,
        error: BaseException | None,
        called: int,
    ) -> Any:
        """The plain ``after`` hooks of the middleware whose ``before`` was called."""
        skip = len(self.afters) - called
        for after, _, name in self.afters:
            if skip:
                skip -= 1
                continue
            if after is None:
                continue
            try:
                result = after(ctx, message, result, error)
            except Exception as exc:
                self._after_failed(ctx, name, exc)
            except BaseException as exc:  # as in ``run``: reported, then raised
                _failed(ctx, exc)
                self._report(ctx, exc)
                raise
        return result

    def _after_failed(self, ctx: MiddlewareContext, name: str, exc: Exception) -> None:
        self.logger.error(
            "middleware_after_failed",
            middleware=name,
            message_type=ctx.message_type,
            error_type=type(exc).__name__,
            error=str(exc),
        )

    def enter_incoming(
        self,
        message: Any,
        message_type: str,
        timeout: float | None,
        headers: dict[str, str] | None,
        message_id: str | None,
    ) -> Coroutine[Any, Any, Any]:
        """Start a message from a transport on this chain, with the wire ``headers`` and
        ``message_id`` it came with: its run, to await."""
        ctx = MiddlewareContext(
            message,
            message_type,
            None,
            None,
            self.pattern,
            message_id,
            self.direction,
            self.system,
        )
        ctx.headers = headers
        ctx.hooks = self.hooks
        if self.probe is not None:
            enter(self.probe, self.pattern)
        return self.run(ctx, message, timeout)

    async def run(self, ctx: MiddlewareContext, message: Any, timeout: float | None) -> Any:
        """``before`` hooks, the step, ``after`` hooks. Returns the query's result, or the
        outcome of a publish or send (``ctx.outcome``)."""
        result: Any = None
        error: BaseException | None = None
        called = 0
        reached = False  # True once the step ran: its handler errors are already logged
        try:
            for before, is_async in self.befores:
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
                reached = True
                # The step's awaitable is kept apart from ``result``: when awaiting it
                # raises, ``after`` hooks must see no result, not the pending coroutine.
                pending = self.step(message, ctx.message_type, timeout, ctx)
                if pending.__class__ is Resume or pending.__class__ is CoroutineType:
                    result = await pending
                else:
                    result = pending
        except BaseException as exc:
            error = exc
            _failed(ctx, exc)
        # the ``after`` hooks of the middleware whose ``before`` was called, innermost first
        skip = len(self.afters) - called
        for after, is_async, name in self.afters:
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
                self._after_failed(ctx, name, exc)
            except BaseException as exc:  # cancelled in an ``after`` hook: reported, raised
                _failed(ctx, exc)
                self._report(ctx, exc)
                raise
        self._report(ctx, error)
        return self._conclude(ctx, result, error, reached)

    def _report(self, ctx: MiddlewareContext, error: BaseException | None) -> None:
        """Tell the probe how the message ended (after every hook: the duration covers
        them, as a middleware outermost would see it); nothing without a probe. What
        :func:`~.observation.report` does, written out (perf: once per message)."""
        probe = self.probe
        if probe is None:
            return
        try:
            probe.message(
                self.pattern, self.direction, self.system, ctx.message_type, ctx.started,
                ctx.outcome, ctx.handlers, error, ctx.trace_id, ctx.message,
            )  # fmt: skip
        except Exception as exc:
            probe_failed(self.logger, exc)

    def _conclude(
        self, ctx: MiddlewareContext, result: Any, error: BaseException | None, reached: bool
    ) -> Any:
        """After the hooks: raise what must be raised, log, return the result or outcome."""
        pattern = self.pattern
        if error is not None:
            if self.is_query or not isinstance(error, Exception):
                raise error
            if isinstance(error, TransportError):
                raise error  # the message never left: fail loudly, never drop it
            if not reached:
                self.logger.error(
                    "message_failed",
                    pattern=pattern,
                    message_type=ctx.message_type,
                    error_type=type(error).__name__,
                    error=str(error),
                )
            return ctx.outcome
        if ctx.outcome == "aborted":
            self.logger.debug("message_aborted", pattern=pattern, message_type=ctx.message_type)
            if self.is_query:
                raise QueryAbortedError(f"query {ctx.message_type!r} was aborted by middleware")
        return result if self.is_query else ctx.outcome


def _failed(ctx: MiddlewareContext, exc: BaseException) -> None:
    """Record on ``ctx`` the outcome ``exc`` makes, unless one was recorded already."""
    if ctx.outcome == "ok":
        ctx.outcome = outcome_of(exc)


async def _value(value: Any) -> Any:
    return value
