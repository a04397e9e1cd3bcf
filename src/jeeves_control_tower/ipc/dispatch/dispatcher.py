"""How one dispatch runs: admission, attempts, retries, the deadline and the observers.

:class:`Dispatcher` is the engine
:class:`~jeeves_control_tower.ipc.dispatch.coordinator.CommBusCoordinator` owns: the
coordinator keeps the registry API, the typed messaging and ``dispatch``'s argument checks;
the dispatcher holds the local handlers, the observers and the remote dispatcher, and takes
a checked ``(target, envelope)`` to one outcome.

Contracts: ``target.timeout_seconds`` bounds the whole dispatch (slot wait, attempts,
backoff); at most ``max_concurrent`` attempts run per service and the rest wait in priority
order (FIFO within a priority); every dispatch ends with exactly one outcome of
:data:`~.contracts.DISPATCH_OUTCOMES` and gives its slot back, cancellation included;
observers are called in registration order, each attempt's hooks inside the attempt's own
context copy, and their exceptions are logged, never raised into the dispatch. The probe
(:class:`~jeeves_control_tower.ipc.telemetry.DispatchProbe`, metrics and flow) is told of
each dispatch once, at its end, before the observers' ``dispatch_end``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from contextvars import copy_context
from typing import Any

from ...types import DispatchTarget, Envelope, LoggerProtocol
from ..bus.eager import Resume, start, start_in
from ..bus.handlers import HandlerEntry
from .admission import Admission, QueueFull
from .attempt import AttemptFailed, DispatchAttempt, _current
from .contracts import DISPATCH_OUTCOMES, DispatchHandler, DispatchObserver, RemoteDispatcher
from .ending import Ended, record_attempt, retry_or_end, terminate
from .observation import Observation, observes_attempts
from .retry import RetryPolicy
from .service_registry import ServiceGone, ServiceRegistry

_perf = time.perf_counter

__all__ = ["Dispatcher"]


class Dispatcher:
    """Dispatch to the services of ``services``. Event-loop-thread only.

    ``on_observer_error(observer, exc)`` is told when an observer hook raised.
    """

    def __init__(
        self,
        services: ServiceRegistry,
        retry: RetryPolicy,
        logger: LoggerProtocol,
        on_observer_error: Callable[[Any, BaseException], None],
        remote: RemoteDispatcher | None = None,
    ) -> None:
        self._services = services
        self._retry = retry
        self._logger = logger
        self._observer_failed = on_observer_error
        self._handlers: dict[str, HandlerEntry] = {}
        #: services whose handler reads ``current_attempt()`` (set only for those)
        self._attempt_aware: set[str] = set()
        self._observers: tuple[DispatchObserver, ...] = ()
        self._per_attempt = False  # some observer wants the attempt hooks
        # (index, its watches_attempts or None) of each observer that watches attempts
        self._attempt_watch: tuple[tuple[int, Any], ...] = ()
        # the only observer's wants_dispatch, asked before each dispatch (None: not asked)
        self._gate: Any = None
        #: Where dispatches to a service with no local handler go (``None``: they end
        #: ``no_handler``).
        self.remote = remote
        #: The :class:`~jeeves_control_tower.ipc.telemetry.DispatchProbe` (``None``: none);
        #: set with :meth:`set_probe`.
        self.probe: Any = None
        # probes replaced while dispatches they counted were in flight: registry observers
        # still, until the last of those ends (see _retire)
        self._retiring: list[Any] = []

    def add_handler(self, service_name: str, handler: DispatchHandler) -> None:
        self._handlers[service_name] = HandlerEntry(handler)
        if getattr(handler, "wants_dispatch_attempt", False) is True:
            self._attempt_aware.add(service_name)
        else:
            self._attempt_aware.discard(service_name)

    def remove_handler(self, service_name: str) -> None:
        self._handlers.pop(service_name, None)
        self._attempt_aware.discard(service_name)

    def has_handler(self, service_name: str) -> bool:
        return service_name in self._handlers

    def add_observer(self, observer: DispatchObserver) -> None:
        """Dispatches started from now on are observed by ``observer`` too."""
        self._set_observers((*self._observers, observer))

    def remove_observer(self, observer: DispatchObserver) -> None:
        """Dispatches started from now on are not observed by ``observer`` (a dispatch
        already started still ends with it)."""
        self._set_observers(tuple(obs for obs in self._observers if obs is not observer))

    def _set_observers(self, observers: tuple[DispatchObserver, ...]) -> None:
        self._observers = observers
        self._gate = getattr(observers[0], "wants_dispatch", None) if len(observers) == 1 else None
        self._per_attempt = observes_attempts(self._observers)
        self._attempt_watch = tuple(
            (i, getattr(obs, "watches_attempts", None))
            for i, obs in enumerate(self._observers)
            if observes_attempts((obs,))
        )

    def set_probe(self, probe: Any) -> None:
        """Count dispatches started from now on with ``probe`` (``None``: none), and make it
        a registry observer (told the current registry at once). The probe set before stays
        one until the dispatches it counted have ended, so the slots they give back reach it
        too; then it is told nothing more."""
        previous = self.probe
        if previous is probe:
            return
        self.probe = probe
        if probe is not None:
            if probe in self._retiring:  # back before its dispatches ended: still observing
                self._retiring.remove(probe)
            else:
                self._services.add_observer(probe)
        if previous is not None:
            self._retiring.append(previous)
            self._retire(previous)

    def _retire(self, probe: Any) -> None:
        """Stop telling a replaced ``probe`` of registry changes once no dispatch it counted
        is in flight (its ``inflight["dispatch"]``, which the probe keeps exact)."""
        try:
            done = probe.inflight["dispatch"] <= 0
        except Exception as exc:
            self._observer_failed(probe, exc)
            done = True
        if done and probe in self._retiring:
            self._retiring.remove(probe)
            self._services.remove_observer(probe)

    def dispatch(self, target: DispatchTarget, envelope: Envelope) -> Coroutine[Any, Any, Envelope]:
        """The dispatch of a checked ``(target, envelope)``, to await: the resulting
        envelope, terminated with the reason when it did not end ``ok``."""
        gate = self._gate
        if gate is not None:  # the only observer may pass on this one (see DispatchObserver)
            try:
                if not gate(envelope):
                    return self._run(target, envelope, None)
            except Exception as exc:
                self._observer_failed(self._observers[0], exc)
        return self._run(target, envelope, self._observers or None)

    async def _run(
        self,
        target: DispatchTarget,
        envelope: Envelope,
        observers: tuple[DispatchObserver, ...] | None,
    ) -> Envelope:
        """Run the dispatch to its end; how it ended goes to its ``observers``, if any (in
        this one coroutine: an observed dispatch costs no coroutine of its own).

        Attempts at the local handler until one succeeds, under admission; a service with
        no local handler goes to the remote dispatcher. (One coroutine for the whole
        unobserved dispatch: the attempt loop is not split out, its frame would cost a few
        per cent of the dispatch.)"""
        probe = self.probe
        if probe is not None:
            probe.inflight["dispatch"] += 1
            started = _perf()
        seen = None
        per_attempt = False
        if observers is not None:
            seen = Observation(observers, target, envelope, self._observer_failed)
            per_attempt = self._per_attempt and seen.wants_attempts(self._attempt_watch)
        attempt = 0
        # how it ended, for the probe and the observers
        outcome, attempts, failure = "ok", 0, None
        try:
            name = target.service_name
            service = self._services.get(name)
            if service is None:
                raise Ended("unknown_service", f"unknown service {name!r}")
            if not service.healthy:
                raise Ended("unhealthy", f"service {name!r} is unhealthy")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + target.timeout_seconds
            handler = self._handlers.get(name)
            if handler is None:
                result = await self._run_remote(target, envelope, deadline)
                attempts = 1
                return result
            admission = self._services.admission(name)
            rank = target.priority.rank
            aware = name in self._attempt_aware
            while True:
                if not admission.try_acquire():
                    await self._wait_for_slot(admission, rank, deadline, target, attempt)
                attempt += 1
                began = time.perf_counter()
                error: BaseException | None = None
                try:
                    if not per_attempt:  # no task, no timer unless the handler suspends
                        # In a context of its own when it reads current_attempt(), and when
                        # an observer has something going (a span, sampled or not): what
                        # the handler sets stays its own whatever the trace's sampling
                        # decision (as on the attempt-hooks path).
                        if aware or (seen is not None and seen.live):
                            context = copy_context()
                            if aware:
                                attempt_now = DispatchAttempt(target, attempt, deadline)
                                context.run(_current.set, attempt_now)
                            # start_in, inline (perf: every observed dispatch)
                            result = context.run(start, handler.fn, handler.is_async, envelope)
                            if result.__class__ is Resume:
                                result.context = context
                        else:
                            result = start(handler.fn, handler.is_async, envelope)
                        if result.__class__ is Resume:
                            result = await self._until_deadline(result, deadline, target, attempt)
                    else:
                        assert seen is not None
                        result = await self._observed_attempt(
                            handler, envelope, deadline, target, attempt, seen, aware
                        )
                except Ended as ended:
                    record_attempt(envelope, target, attempt, "timeout", began, None)
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
                    record_attempt(result, target, attempt, "ok", began, None)
                    attempts = attempt
                    return result
                record_attempt(envelope, target, attempt, "error", began, error)
                delay = self._retry.delay(attempt)
                if isinstance(error, AttemptFailed) and error.retry_after is not None:
                    delay = max(delay, error.retry_after)
                ended_error = retry_or_end(target, attempt, error, deadline, loop.time() + delay)
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
                await asyncio.sleep(delay)
        except Ended as ended:
            # attempts made: those before a slot refused for a retry too (a remote one: 1)
            outcome, failure = ended.outcome, ended.error or ended
            attempts = ended.attempts if ended.attempts > attempt else attempt
            return ended.envelope or terminate(envelope, target, ended, self._logger)
        except BaseException as exc:
            outcome = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
            failure, attempts = exc, attempt  # the attempts made, the running one included
            raise
        finally:
            if probe is not None:
                try:
                    probe.dispatched(target, outcome, attempts, failure, started)
                except Exception as exc:
                    self._observer_failed(probe, exc)
                if probe is not self.probe:  # replaced meanwhile: maybe its last dispatch
                    self._retire(probe)
            if seen is not None:
                seen.end(target, outcome, attempts, failure)

    async def _run_remote(
        self, target: DispatchTarget, envelope: Envelope, deadline: float
    ) -> Envelope:
        remote = self.remote
        if remote is None:
            raise Ended(
                "no_handler",
                f"service {target.service_name!r} has no local handler and no CommBus adapter"
                " is configured",
            )
        result = await remote.dispatch(target, envelope, deadline)
        if result.terminated:  # ended remotely: keep its reason, count its outcome
            last = result.errors[-1] if result.errors else {}
            outcome = last.get("outcome") if isinstance(last, dict) else None
            ended = Ended(
                outcome if outcome in DISPATCH_OUTCOMES else "error",
                result.termination_reason or "terminated remotely",
            )
            ended.attempts, ended.envelope = 1, result
            raise ended
        return result

    @staticmethod
    async def _wait_for_slot(
        admission: Admission, rank: int, deadline: float, target: DispatchTarget, attempt: int
    ) -> None:
        name = target.service_name
        try:
            async with asyncio.timeout_at(deadline):
                await admission.acquire(rank)
        except TimeoutError:
            ended = Ended(
                "timeout",
                f"service {name!r} timed out after {target.timeout_seconds}s"
                " waiting for a free slot",
                TimeoutError("dispatch deadline expired"),
            )
            ended.attempts = attempt
            raise ended from None
        except QueueFull as exc:
            raise Ended("overloaded", f"service {name!r} is overloaded: {exc}", exc) from None
        except ServiceGone as exc:
            raise Ended("unknown_service", str(exc), exc) from None

    async def _observed_attempt(
        self,
        handler: HandlerEntry,
        envelope: Envelope,
        deadline: float,
        target: DispatchTarget,
        attempt: int,
        seen: Observation,
        aware: bool,
    ) -> Any:
        """One attempt, with the observers' attempt hooks around it, in its own context."""
        observers, tokens = seen.observers, seen.tokens
        context = copy_context()
        if aware:
            context.run(_current.set, DispatchAttempt(target, attempt, deadline))
        attempt_tokens = context.run(self._attempt_start, seen, target, attempt)
        error: BaseException | None = None
        try:
            result = start_in(context, handler.fn, handler.is_async, envelope)
            if result.__class__ is Resume:
                result = await self._until_deadline(result, deadline, target, attempt)
            return result
        except BaseException as exc:
            # observers see what the attempt died of, not the internal end-of-dispatch signal
            error = exc.error if isinstance(exc, Ended) and exc.error is not None else exc
            raise
        finally:
            for obs, token, atoken in zip(observers, tokens, attempt_tokens, strict=True):
                try:
                    obs.attempt_end(token, atoken, error)
                except Exception as exc:
                    self._observer_failed(obs, exc)

    def _attempt_start(self, seen: Observation, target: DispatchTarget, attempt: int) -> list[Any]:
        out = []
        for obs, token in zip(seen.observers, seen.tokens, strict=True):
            try:
                out.append(obs.attempt_start(token, target, attempt))
            except Exception as exc:
                out.append(None)
                self._observer_failed(obs, exc)
        return out

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
                raise Ended(
                    "timeout",
                    f"service {target.service_name!r} timed out after"
                    f" {target.timeout_seconds}s (attempt {attempt})",
                    exc,
                ) from None
            raise
