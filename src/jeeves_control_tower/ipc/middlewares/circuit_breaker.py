"""Circuit breaker: stop calling a message type's handler after repeated failures.

Per message type: ``failure_threshold`` consecutive failures open the circuit (a message
no handler took, one a middleware aborted and one whose caller cancelled it are not
failures); while open, messages of that type fail fast with :class:`CircuitOpenError`
(raised to a query's caller, logged for a publish or send). After ``reset_timeout``
seconds one probe is let through (half-open): its success closes the circuit, its failure
opens it again. Types in ``excluded_types`` are never broken.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..bus.middleware import MiddlewareContext

__all__ = ["CircuitBreakerMiddleware", "CircuitOpenError"]

_PROBE = "circuit_breaker.probe"


class CircuitOpenError(RuntimeError):
    """The circuit of a message type is open; the message was not delivered."""

    def __init__(self, message_type: str, retry_in: float) -> None:
        super().__init__(
            f"circuit open for {message_type!r}: failing fast, next probe in {retry_in:.2f}s"
        )
        self.message_type = message_type
        self.retry_in = retry_in


@dataclass
class _Circuit:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False


class CircuitBreakerMiddleware:
    """Middleware; safe to share between buses on one event loop thread."""

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        excluded_types: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(failure_threshold, int) or failure_threshold < 1:
            raise ValueError(f"failure_threshold must be an int >= 1, got {failure_threshold!r}")
        if not isinstance(reset_timeout, (int, float)) or reset_timeout <= 0:
            raise ValueError(f"reset_timeout must be > 0 seconds, got {reset_timeout!r}")
        self.failure_threshold = failure_threshold
        self.reset_timeout = float(reset_timeout)
        self.excluded_types = frozenset(excluded_types)
        self._clock = clock
        self._circuits: dict[str, _Circuit] = {}

    def state(self, message_type: str) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"``."""
        c = self._circuits.get(message_type)
        if c is None or c.opened_at is None:
            return "closed"
        if c.probing or self._clock() - c.opened_at >= self.reset_timeout:
            return "half_open"
        return "open"

    def before(self, ctx: MiddlewareContext, message: Any) -> Any:
        mtype = ctx.message_type
        if mtype in self.excluded_types:
            return message
        c = self._circuits.get(mtype)
        if c is None or c.opened_at is None:
            return message
        waited = self._clock() - c.opened_at
        if waited < self.reset_timeout or c.probing:
            raise CircuitOpenError(mtype, max(0.0, self.reset_timeout - waited))
        c.probing = True
        ctx.metadata[_PROBE] = True
        return message

    def after(
        self, ctx: MiddlewareContext, message: Any, result: Any, error: BaseException | None
    ) -> Any:
        mtype = ctx.message_type
        if mtype in self.excluded_types or isinstance(error, CircuitOpenError):
            return result
        if ctx.outcome in ("aborted", "no_handler", "cancelled"):
            self._end_probe(ctx, mtype)
            return result
        c = self._circuits.setdefault(mtype, _Circuit())
        probe = self._end_probe(ctx, mtype)
        if error is None:
            c.failures = 0
            c.opened_at = None
            return result
        c.failures += 1
        if probe or c.failures >= self.failure_threshold:
            c.opened_at = self._clock()
        return result

    def _end_probe(self, ctx: MiddlewareContext, mtype: str) -> bool:
        if ctx._metadata is None or not ctx._metadata.pop(_PROBE, False):
            return False
        c = self._circuits.get(mtype)
        if c is not None:
            c.probing = False
        return True
