"""CommBusCoordinator: the service registry plus request dispatch, and typed messaging.

``dispatch`` is the heart: admission (``max_concurrent`` with a priority queue), a deadline
covering everything, retries with backoff, and an envelope that always says how it ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextvars import copy_context
from typing import Any, Protocol, runtime_checkable

from ..logging import ensure_logger
from ..types import DispatchTarget, Envelope, LoggerProtocol, ServiceDescriptor
from .admission import QueueFull
from .commbus import InMemoryCommBus, NoHandlerError, QueryAbortedError, get_commbus
from .eager import Resume, start, start_in
from .messages import DynamicEvent, DynamicQuery, HandlerFunc
from .registry import RegistryObserver, ServiceGone, ServiceRegistry
from .retry import RetryPolicy

__all__ = [
    "CommBusCoordinator",
    "CommBusCoordinatorProtocol",
    "DispatchHandler",
    "DispatchObserver",
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


@runtime_checkable
class CommBusCoordinatorProtocol(Protocol):
    def register_service(self, descriptor: ServiceDescriptor) -> bool: ...
    def unregister_service(self, service_name: str) -> bool: ...
    def get_service(self, service_name: str) -> ServiceDescriptor | None: ...
    def list_services(
        self,
        service_type: str | None = None,
        healthy_only: bool = True,
    ) -> list[ServiceDescriptor]: ...
    async def dispatch(self, target: DispatchTarget, envelope: Envelope) -> Envelope: ...
    async def broadcast(self, event_type: str, payload: dict[str, Any]) -> None: ...
    async def request(
        self,
        service_name: str,
        query_type: str,
        payload: dict[str, Any],
        timeout_seconds: float = 30.0,
    ) -> dict[str, Any]: ...


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


class _Ended(Exception):
    """Internal: the dispatch ended with a non-ok outcome."""

    def __init__(self, outcome: str, reason: str, error: BaseException | None = None) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason
        self.error = error
        self.attempts = 0
        self.envelope: Envelope | None = None  # already terminated elsewhere (remote)


class CommBusCoordinator:
    """Service registry and request dispatch over an :class:`InMemoryCommBus`.

    Concurrency: event-loop-thread only. ``dispatch`` may be called concurrently any number
    of times; at most ``max_concurrent`` attempts run per service, the rest wait in priority
    order, at most ``max_queue`` of them (beyond that a dispatch ends ``overloaded``).
    """

    def __init__(
        self,
        logger: LoggerProtocol | None = None,
        commbus: InMemoryCommBus | None = None,
        *,
        retry_policy: RetryPolicy | None = None,
        max_queue: int | None = 1000,
        remote: RemoteDispatcher | None = None,
        **telemetry: Any,
    ) -> None:
        """``logger`` may be any structlog-style logger or a ``logging.Logger``;
        ``commbus`` defaults to :func:`get_commbus`. Extra keywords (``instrument``,
        ``tracer_provider``, ``registry``, ...) configure the built-in telemetry, as for
        :class:`InMemoryCommBus`."""
        self._logger = ensure_logger(logger, "jeeves_control_tower.coordinator")
        self._bus = commbus if commbus is not None else get_commbus(logger)
        self._retry = retry_policy or RetryPolicy()
        if max_queue is not None and (not isinstance(max_queue, int) or max_queue < 0):
            raise ValueError(f"max_queue must be None or an int >= 0, got {max_queue!r}")
        self._registry = ServiceRegistry(max_queue, self._observer_failed)
        self._handlers: dict[str, DispatchHandler] = {}
        self._handler_async: dict[str, bool] = {}
        self.remote = remote
        self._observers: tuple[DispatchObserver, ...] = ()
        self.telemetry: Any = None
        instrument = telemetry.pop("instrument", None)
        if instrument is not False:
            from .._instrumentation import auto_instrument_coordinator

            self.telemetry = auto_instrument_coordinator(
                self, explicit=instrument is True, **telemetry
            )
        elif telemetry:
            raise TypeError(f"unexpected arguments with instrument=False: {sorted(telemetry)}")

    @property
    def commbus(self) -> InMemoryCommBus:
        return self._bus

    @property
    def logger(self) -> LoggerProtocol:
        return self._logger

    def add_observer(self, observer: DispatchObserver) -> None:
        """Attach dispatch telemetry (it is told the current registry at once)."""
        self._observers += (observer,)
        self._registry.add_observer(observer)

    # ------------------------------------------------------------------ registry

    def register_service(self, descriptor: ServiceDescriptor) -> bool:
        """Register a service; ``False`` if the name is taken. Its ``current_load`` is reset
        to 0 and from now on maintained by the coordinator."""
        if not isinstance(descriptor, ServiceDescriptor):
            raise TypeError(f"expected a ServiceDescriptor, got {type(descriptor).__name__}")
        added = self._registry.add(descriptor)
        if added:
            self._logger.info(
                "service_registered", service=descriptor.name, type=descriptor.service_type
            )
        return added

    def unregister_service(self, service_name: str) -> bool:
        """Remove a service and its handler. Dispatches waiting for one of its slots end
        ``unknown_service``; attempts already running finish."""
        descriptor = self._registry.remove(service_name)
        if descriptor is None:
            return False
        self._handlers.pop(service_name, None)
        self._handler_async.pop(service_name, None)
        self._logger.info("service_unregistered", service=service_name)
        return True

    def get_service(self, service_name: str) -> ServiceDescriptor | None:
        """The live descriptor of ``service_name`` (or ``None``)."""
        return self._registry.get(service_name)

    def list_services(
        self,
        service_type: str | None = None,
        healthy_only: bool = True,
    ) -> list[ServiceDescriptor]:
        """Registered services in registration order, optionally of one type, by default
        only the healthy ones."""
        return [
            s
            for s in self._registry.values()
            if (service_type is None or s.service_type == service_type)
            and (s.healthy or not healthy_only)
        ]

    def set_service_health(self, service_name: str, healthy: bool) -> bool:
        """Mark a service healthy or unhealthy; ``False`` if it is not registered.
        Dispatches to an unhealthy service end at once with ``unhealthy``."""
        changed = self._registry.set_health(service_name, healthy)
        if changed:
            self._logger.info("service_health_changed", service=service_name, healthy=bool(healthy))
        return changed

    def set_service_capacity(self, service_name: str, max_concurrent: int) -> bool:
        """Change ``max_concurrent`` at run time; waiting dispatches are admitted at once
        if it grew."""
        return self._registry.set_capacity(service_name, max_concurrent)

    def update_remote_service(
        self,
        service_name: str,
        *,
        current_load: int,
        max_concurrent: int,
        queue_depth: int,
        healthy: bool,
    ) -> bool:
        """Set the load, capacity, queue depth and health of a service served by another
        process (as reported by its heartbeats); telemetry observers are told at once.
        ``False`` if it is not registered. For transports, not for local services."""
        return self._registry.update_mirror(
            service_name,
            current_load=current_load,
            max_concurrent=max_concurrent,
            queue_depth=queue_depth,
            healthy=healthy,
        )

    def queue_depth(self, service_name: str) -> int:
        """Dispatches waiting for a slot of ``service_name`` right now."""
        return self._registry.queue_depth(service_name)

    def register_handler(self, service_name: str, handler: DispatchHandler) -> None:
        """Register the local dispatch handler of a registered service.

        Raises ``ValueError`` for an unknown service or one that already has a handler,
        ``TypeError`` for a handler that is not callable."""
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        if service_name not in self._registry:
            raise ValueError(f"service {service_name!r} is not registered; register it first")
        if service_name in self._handlers:
            raise ValueError(f"service {service_name!r} already has a handler")
        from .eager import is_async_callable

        self._handlers[service_name] = handler
        self._handler_async[service_name] = is_async_callable(handler)

    def has_local_handler(self, service_name: str) -> bool:
        return service_name in self._handlers

    # ------------------------------------------------------------------ dispatch

    async def dispatch(self, target: DispatchTarget, envelope: Envelope) -> Envelope:
        """Dispatch ``envelope`` to ``target.service_name`` and return the resulting envelope.

        Never raises for service-level failures: the envelope comes back with
        ``terminated=True`` and a ``termination_reason`` naming the service and the cause
        (unknown service, unhealthy, overloaded, timeout, error after retries, no handler).
        ``target.timeout_seconds`` bounds the whole call (slot wait, attempts, backoff).
        Each attempt is recorded in ``envelope.processing_history``. Cancelling the caller
        cancels the running attempt and frees its slot; ``CancelledError`` propagates.
        """
        if not isinstance(target, DispatchTarget):
            raise TypeError(f"target must be a DispatchTarget, got {type(target).__name__}")
        if not isinstance(envelope, Envelope):
            raise TypeError(f"envelope must be an Envelope, got {type(envelope).__name__}")
        observers = self._observers
        if not observers:
            try:
                return (await self._dispatch(target, envelope, None))[0]
            except _Ended as ended:
                return ended.envelope or self._terminate(envelope, target, ended)
        return await self._dispatch_observed(target, envelope, observers)

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
        except _Ended as ended:
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
        """Returns ``(result, attempts)`` or raises :class:`_Ended`."""
        name = target.service_name
        service = self._registry.get(name)
        if service is None:
            raise _Ended("unknown_service", f"unknown service {name!r}")
        if not service.healthy:
            raise _Ended("unhealthy", f"service {name!r} is unhealthy")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + target.timeout_seconds
        handler = self._handlers.get(name)
        if handler is None:
            if self.remote is not None:
                remote = await self.remote.dispatch(target, envelope, deadline)
                if remote.terminated:  # ended remotely: keep its reason, count its outcome
                    last = remote.errors[-1] if remote.errors else {}
                    outcome = last.get("outcome") if isinstance(last, dict) else None
                    ended = _Ended(
                        outcome if outcome in DISPATCH_OUTCOMES else "error",
                        remote.termination_reason or "terminated remotely",
                    )
                    ended.attempts, ended.envelope = 1, remote
                    raise ended
                return remote, 1
            raise _Ended(
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
            except _Ended as ended:
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
    ) -> _Ended | None:
        described = f"{type(error).__name__}: {error}"
        name = target.service_name
        if attempt > target.max_retries:
            return _Ended(
                "error",
                f"service {name!r} failed after {attempt} attempt(s): {described}",
                error,
            )
        if now + self._retry.delay(attempt) >= deadline:
            return _Ended(
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
            ended = _Ended(
                "timeout",
                f"service {name!r} timed out after {target.timeout_seconds}s"
                " waiting for a free slot",
                TimeoutError("dispatch deadline expired"),
            )
            ended.attempts = attempt
            raise ended from None
        except QueueFull as exc:
            raise _Ended("overloaded", f"service {name!r} is overloaded: {exc}", exc) from None
        except ServiceGone as exc:
            raise _Ended("unknown_service", str(exc), exc) from None

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
            error = exc.error if isinstance(exc, _Ended) and exc.error is not None else exc
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
                raise _Ended(
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

    def _terminate(self, envelope: Envelope, target: DispatchTarget, ended: _Ended) -> Envelope:
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

    # ------------------------------------------------------------------ events and queries

    async def broadcast(self, event_type: str, payload: dict[str, Any]) -> None:
        """Publish a :class:`DynamicEvent` of ``event_type``: the subscribers of
        ``event_type`` receive it (``event.payload`` holds a copy of ``payload``)."""
        if not isinstance(event_type, str) or not event_type:
            raise ValueError(f"event_type must be a non-empty string, got {event_type!r}")
        if not isinstance(payload, dict):
            raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
        await self._bus.publish(DynamicEvent(event_type, dict(payload)))

    async def publish_event(self, event: Any) -> None:
        """Publish a typed event via the bus."""
        await self._bus.publish(event)

    async def request(
        self,
        service_name: str,
        query_type: str,
        payload: dict[str, Any],
        timeout_seconds: float = 30.0,
    ) -> dict[str, Any]:
        """Send a :class:`DynamicQuery` of ``query_type`` to its handler on the bus.

        Returns ``{"result": ...}``, or ``{"error": "..."}`` naming the cause: unknown or
        unhealthy service, no handler, a middleware abort, the handler's error, a timeout.
        Cancellation propagates."""
        if not isinstance(query_type, str) or not query_type:
            raise ValueError(f"query_type must be a non-empty string, got {query_type!r}")
        if not isinstance(payload, dict):
            raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
        service = self._registry.get(service_name)
        if service is None:
            return {"error": f"unknown service {service_name!r}"}
        if not service.healthy:
            return {"error": f"service {service_name!r} is unhealthy"}
        query = DynamicQuery(query_type, dict(payload), service_name)
        what = f"query {query_type!r} to service {service_name!r}"
        try:
            return {"result": await self._bus.query(query, timeout=timeout_seconds)}
        except NoHandlerError:
            return {"error": f"no handler for query {query_type!r} (service {service_name!r})"}
        except QueryAbortedError:
            return {"error": f"{what} was aborted by middleware"}
        except TimeoutError:
            return {"error": f"{what} timed out after {timeout_seconds}s"}
        except Exception as exc:
            return {"error": f"{what} failed: {type(exc).__name__}: {exc}"}

    async def send_query(self, query: Any, timeout: float | None = None) -> Any:
        """Send a typed query via the bus; exceptions as for :meth:`InMemoryCommBus.query`."""
        return await self._bus.query(query, timeout=timeout)

    def subscribe(self, event_type: str, handler: HandlerFunc) -> Callable[[], None]:
        """Subscribe to bus events; returns the unsubscribe function."""
        return self._bus.subscribe(event_type, handler)

    def register_query_handler(self, query_type: str, handler: HandlerFunc) -> None:
        """Register the bus handler for queries of ``query_type`` (``ValueError`` if taken)."""
        self._bus.register_handler(query_type, handler)
