"""The observation of one dispatch: its observers' ``dispatch_start`` / ``dispatch_end``.

An observer that only watches whole dispatches says so with ``observes_attempts = False``
(:class:`~.contracts.WholeDispatchObserver` does): when no observer of a dispatch watches
attempts, the dispatcher runs its attempts with no attempt hooks: each still in a context of
its own when the dispatch is :attr:`Observation.live` (so what a handler sets never depends
on the trace's sampling decision), in the caller's context otherwise (no observer had
anything going: no SDK, say), as with no observer.
Event-loop-thread only; observer errors go to ``failed(observer, exc)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ...types import DispatchTarget, Envelope
from .contracts import DispatchObserver

__all__ = ["Observation", "observes_attempts"]

_perf = time.perf_counter


def observes_attempts(observers: tuple[DispatchObserver, ...]) -> bool:
    """Whether some observer of ``observers`` wants the per-attempt hooks."""
    return any(getattr(obs, "observes_attempts", True) for obs in observers)


class Observation:
    """An observed dispatch: started when made (every observer's ``dispatch_start``, in
    registration order), ended with :meth:`end`."""

    __slots__ = ("failed", "live", "observers", "started", "tokens")

    def __init__(
        self,
        observers: tuple[DispatchObserver, ...],
        target: DispatchTarget,
        envelope: Envelope,
        failed: Callable[[Any, BaseException], None],
    ) -> None:
        self.started = _perf()
        self.observers = observers
        self.failed = failed
        if len(observers) == 1:  # perf: the common case, one observer
            obs = observers[0]
            try:
                token = obs.dispatch_start(target, envelope)
            except Exception as exc:
                token = None
                failed(obs, exc)
            self.tokens = [token]
            self.live = token is not None
            return
        tokens = []
        for obs in observers:
            try:
                tokens.append(obs.dispatch_start(target, envelope))
            except Exception as exc:
                tokens.append(None)
                failed(obs, exc)
        self.tokens = tokens
        #: Whether some observer's ``dispatch_start`` returned a token (not ``None``).
        self.live = any(token is not None for token in tokens)

    def wants_attempts(self, watch: tuple[tuple[int, Any], ...]) -> bool:
        """Whether some observer wants this dispatch's attempt hooks: ``watch`` holds
        (index, ``watches_attempts`` or ``None``) of each observer that watches attempts."""
        tokens = self.tokens
        for i, asks in watch:
            if asks is None:
                return True
            try:
                if asks(tokens[i]):
                    return True
            except Exception as exc:
                self.failed(self.observers[i], exc)
                return True
        return False

    def end(
        self, target: DispatchTarget, outcome: str, attempts: int, error: BaseException | None
    ) -> None:
        """Every observer's ``dispatch_end``, with how the dispatch went."""
        duration = _perf() - self.started
        observers = self.observers
        if len(observers) == 1:  # perf: the common case, one observer
            try:
                observers[0].dispatch_end(
                    self.tokens[0], target, outcome, attempts, error, duration
                )
            except Exception as exc:
                self.failed(observers[0], exc)
            return
        for obs, token in zip(observers, self.tokens, strict=True):
            try:
                obs.dispatch_end(token, target, outcome, attempts, error, duration)
            except Exception as exc:
                self.failed(obs, exc)
