"""How one dispatch runs: admission, attempts, retries, the deadline and the observers.

:class:`Dispatching` is the engine
:class:`~jeeves_control_tower.ipc.coordinator.CommBusCoordinator` inherits: the coordinator
keeps the registry API, the typed messaging and ``dispatch``'s argument checks; this module
takes a checked ``(target, envelope)`` to one outcome.

Contracts: ``target.timeout_seconds`` bounds the whole dispatch (slot wait, attempts,
backoff); at most ``max_concurrent`` attempts run per service and the rest wait in priority
order (FIFO within a priority); every dispatch ends with exactly one outcome of
:data:`DISPATCH_OUTCOMES` and gives its slot back, cancellation included; observers are
called in registration order, each attempt's hooks inside the attempt's own context copy,
and their exceptions are logged, never raised into the dispatch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextvars import copy_context
from typing import Any, Protocol

from ..types import DispatchTarget, Envelope, LoggerProtocol
from .admission import QueueFull
from .eager import Resume, start, start_in
from .registry import RegistryObserver, ServiceGone, ServiceRegistry
from .retry import RetryPolicy

__all__ = [
    "DISPATCH_OUTCOMES",
    "DispatchHandler",
    "DispatchObserver",
    "Dispatching",
    "RemoteDispatcher",
    "WholeDispatchObserver",
]

#: A local dispatch handler: takes the envelope, returns the (processed) envelope.
DispatchHandler = Callable[[Envelope], Awaitable[Envelope]]

#: Every outcome a dispatch can end with (the ``outcome`` metric label).
DISPATCH_OUTCOMES = (
    "ok",
    "error",
    "timeout",
    "overloaded",
    "unknown_service",
    "unhealthy",
    "no_handler",
    "cancelled",
)


class RemoteDispatcher(Protocol):
    """Carries a dispatch to a service whose handler lives in another process."""

    async def dispatch(
        self, target: DispatchTarget, envelope: Envelope, deadline: float
    ) -> Envelope:
        """``deadline`` is on the event loop's clock (``loop.time()``)."""
        ...


class DispatchObserver(RegistryObserver, Protocol):
    """Telemetry for dispatch. Methods must be fast; exceptions are logged and ignored.

    ``attempt_start`` runs inside the attempt's own context copy, so what it makes current
    (a span) is what the handler sees.
    """

    def dispatch_start(self, target: DispatchTarget, envelope: Envelope) -> Any: ...

    def attempt_start(self, token: Any, target: DispatchTarget, attempt: int) -> Any: ...

    def attempt_end(self, token: Any, attempt_token: Any, error: BaseException | None) -> None: ...

    def dispatch_end(
        self,
        token: Any,
        target: DispatchTarget,
        outcome: str,
        attempts: int,
        error: BaseException | None,
        duration: float,
    ) -> None: ...


class WholeDispatchObserver:
    """Base for dispatch observers that only watch whole dispatches: the per-attempt hooks
    of :class:`DispatchObserver` do nothing."""

    def attempt_start(self, token: Any, target: DispatchTarget, attempt: int) -> None:
        return None

    def attempt_end(self, token: Any, attempt_token: Any, error: BaseException | None) -> None:
        return None


class DispatchEnded(Exception):
    """Internal (raised and caught inside dispatch): the dispatch ended with a non-ok
    outcome."""

    def __init__(self, outcome: str, reason: str, error: BaseException | None = None) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason
        self.error = error
        self.attempts = 0
        self.envelope: Envelope | None = None  # already terminated elsewhere (remote)


class Dispatching:
    """Dispatch for a coordinator holding these (set by the coordinator's ``__init__``).

    Event-loop-thread only."""

    _logger: LoggerProtocol
    _registry: ServiceRegistry
    _retry: RetryPolicy
    _handlers: dict[str, DispatchHandler]
    _handler_async: dict[str, bool]
    _observers: tuple[DispatchObserver, ...]
    remote: RemoteDispatcher | None

    async def _dispatch_observed(
        self, target: DispatchTarget, envelope: Envelope, observers: tuple[DispatchObserver, ...]
    ) -> Envelope:
        started = time.perf_counter()
        tokens = []
        for obs in observers:
            try:
                tokens.append(obs.dispatch_start(target, envelope))
            except Exception as exc:
                tokens.append(None)
                self._observer_failed(obs, exc)
        outcome = "ok"
        error: BaseException | None = None
        attempts = [0]
        try:
            result, attempts[0] = await self._dispatch(target, envelope, tokens)
            return result
        except DispatchEnded as ended:
            outcome, error = ended.outcome, ended.error or ended
            attempts[0] = ended.attempts
            return ended.envelope or self._terminate(envelope, target, ended)
        except BaseException as exc:
            outcome = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
            error = exc
            raise
        finally:
            duration = time.perf_counter() - started
            for obs, token in zip(observers, tokens, strict=True):
                try:
                    obs.dispatch_end(token, target, outcome, attempts[0], error, duration)
                except Exception as exc:
                    self._observer_failed(obs, exc)

    async def _dispatch(
        self, target: DispatchTarget, envelope: Envelope, tokens: list[Any] | None
    ) -> tuple[Envelope, int]:
        """Returns ``(result, attempts)`` or raises :class:`DispatchEnded`."""
        name = target.service_name
        service = self._registry.get(name)
        if service is None:
            raise DispatchEnded("unknown_service", f"unknown service {name!r}")
        if not service.healthy:
            raise DispatchEnded("unhealthy", f"service {name!r} is unhealthy")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + target.timeout_seconds
        handler = self._handlers.get(name)
        if handler is None:
            if self.remote is not None:
                remote = await self.remote.dispatch(target, envelope, deadline)
                if remote.terminated:  # ended remotely: keep its reason, count its outcome
                    last = remote.errors[-1] if remote.errors else {}
                    outcome = last.get("outcome") if isinstance(last, dict) else None
                    ended = DispatchEnded(
                        outcome if outcome in DISPATCH_OUTCOMES else "error",
                        remote.termination_reason or "terminated remotely",
                    )
                    ended.attempts, ended.envelope = 1, remote
                    raise ended
                return remote, 1
            raise DispatchEnded(
                "no_handler",
                f"service {name!r} has no local handler and no CommBus adapter is configured",
            )
        is_async = self._handler_async[name]
        admission = self._registry.admission(name)
        rank = target.priority.rank
        attempt = 0
        while True:
            if not admission.try_acquire():
                await self._wait_for_slot(admission, rank, deadline, target, attempt)
            attempt += 1
            began = time.perf_counter()
            error: BaseException | None = None
            result: Any = None
            try:
                if tokens is None:  # the unobserved fast path: no task, no timer unless needed
                    result = start(handler, is_async, envelope)
                    if result.__class__ is Resume:
                        result = await self._until_deadline(result, deadline, target, attempt)
                else:
                    result = await self._attempt(
                        handler, is_async, envelope, deadline, target, attempt, tokens
                    )
            except DispatchEnded as ended:
                self._record(envelope, target, attempt, "timeout", began, None)
                ended.attempts = attempt
                raise
            except Exception as exc:
                error = exc
            finally:
                admission.release()
            if error is None and not isinstance(result, Envelope):
                error = TypeError(
                    f"handler of service {name!r} returned {type(result).__name__},"
                    " expected Envelope"
                )
            if error is None:
                self._record(result, target, attempt, "ok", began, None)
                return result, attempt
            self._record(envelope, target, attempt, "error", began, error)
            ended_error = self._retry_or_end(target, attempt, error, deadline, loop.time())
            if ended_error is not None:
                ended_error.attempts = attempt
                raise ended_error
            self._logger.warning(
                "dispatch_retry",
                service=name,
                method=target.method,
                attempt=attempt,
                error_type=type(error).__name__,
                error=str(error),
            )
            delay = self._retry.delay(attempt)
            await asyncio.sleep(delay)

    def _retry_or_end(
        self,
        target: DispatchTarget,
        attempt: int,
        error: BaseException,
        deadline: float,
        now: float,
    ) -> DispatchEnded | None:
        described = f"{type(error).__name__}: {error}"
        name = target.service_name
        if attempt > target.max_retries:
            return DispatchEnded(
                "error",
                f"service {name!r} failed after {attempt} attempt(s): {described}",
                error,
            )
        if now + self._retry.delay(attempt) >= deadline:
            return DispatchEnded(
                "error",
                f"service {name!r} failed after {attempt} attempt(s), no time left before the"
                f" deadline to retry: {described}",
                error,
            )
        return None

    async def _wait_for_slot(
        self, admission: Any, rank: int, deadline: float, target: DispatchTarget, attempt: int
    ) -> None:
        name = target.service_name
        try:
            async with asyncio.timeout_at(deadline):
                await admission.acquire(rank)
        except TimeoutError:
            ended = DispatchEnded(
                "timeout",
                f"service {name!r} timed out after {target.timeout_seconds}s"
                " waiting for a free slot",
                TimeoutError("dispatch deadline expired"),
            )
            ended.attempts = attempt
            raise ended from None
        except QueueFull as exc:
            raise DispatchEnded(
                "overloaded", f"service {name!r} is overloaded: {exc}", exc
            ) from None
        except ServiceGone as exc:
            raise DispatchEnded("unknown_service", str(exc), exc) from None

    async def _attempt(
        self,
        handler: DispatchHandler,
        is_async: bool,
        envelope: Envelope,
        deadline: float,
        target: DispatchTarget,
        attempt: int,
        tokens: list[Any] | None,
    ) -> Any:
        observers = self._observers if tokens is not None else ()
        attempt_tokens: list[Any] = []
        error: BaseException | None = None
        try:
            if observers:
                context = copy_context()
                attempt_tokens = context.run(
                    self._attempt_start, observers, tokens, target, attempt
                )
                result = start_in(context, handler, is_async, envelope)
            else:
                result = start(handler, is_async, envelope)
            if result.__class__ is Resume:
                result = await self._until_deadline(result, deadline, target, attempt)
            return result
        except BaseException as exc:
            # observers see what the attempt died of, not the internal end-of-dispatch signal
            error = exc.error if isinstance(exc, DispatchEnded) and exc.error is not None else exc
            raise
        finally:
            for obs, token, atoken in zip(observers, tokens or (), attempt_tokens, strict=False):
                try:
                    obs.attempt_end(token, atoken, error)
                except Exception as exc:
                    self._observer_failed(obs, exc)

    @staticmethod
    async def _until_deadline(
        resume: Resume, deadline: float, target: DispatchTarget, attempt: int
    ) -> Any:
        """Drive a suspended attempt; at the deadline cancel it and end ``timeout``."""
        timeout = asyncio.timeout_at(deadline)
        try:
            async with timeout:
                return await resume
        except TimeoutError as exc:
            if timeout.expired():
                raise DispatchEnded(
                    "timeout",
                    f"service {target.service_name!r} timed out after"
                    f" {target.timeout_seconds}s (attempt {attempt})",
                    exc,
                ) from None
            raise

    def _attempt_start(
        self,
        observers: tuple[DispatchObserver, ...],
        tokens: list[Any] | None,
        target: DispatchTarget,
        attempt: int,
    ) -> list[Any]:
        out = []
        for obs, token in zip(observers, tokens or (), strict=False):
            try:
                out.append(obs.attempt_start(token, target, attempt))
            except Exception as exc:
                out.append(None)
                self._observer_failed(obs, exc)
        return out

    def _record(
        self,
        envelope: Envelope,
        target: DispatchTarget,
        attempt: int,
        outcome: str,
        began: float,
        error: BaseException | None,
    ) -> None:
        entry: dict[str, Any] = {
            "service": target.service_name,
            "method": target.method,
            "attempt": attempt,
            "outcome": outcome,
            "duration_ms": round((time.perf_counter() - began) * 1000.0, 3),
        }
        if error is not None:
            entry["error"] = f"{type(error).__name__}: {error}"
        envelope.processing_history.append(entry)

    def _terminate(
        self, envelope: Envelope, target: DispatchTarget, ended: DispatchEnded
    ) -> Envelope:
        envelope.terminate(ended.reason)
        envelope.errors.append(
            {
                "service": target.service_name,
                "method": target.method,
                "outcome": ended.outcome,
                "reason": ended.reason,
            }
        )
        self._logger.warning(
            "dispatch_ended",
            service=target.service_name,
            method=target.method,
            outcome=ended.outcome,
            reason=ended.reason,
        )
        return envelope

    def _observer_failed(self, observer: Any, exc: BaseException) -> None:
        self._logger.error(
            "telemetry_observer_failed",
            observer=type(observer).__name__,
            error_type=type(exc).__name__,
            error=str(exc),
        )
