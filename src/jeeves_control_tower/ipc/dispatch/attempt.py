"""What a dispatch handler may learn about the attempt it runs in, and how it says that a
failure is worth (or not worth) another attempt.

:func:`current_attempt` is set only for handlers that ask for it (an attribute
``wants_dispatch_attempt = True`` on the handler object, read once at registration), so
plain handlers pay nothing. It is a context variable: the attempt's own context copy when
the dispatch is observed, else the dispatching task's context for the attempt's duration.

:class:`AttemptFailed` is what a handler raises to steer the retry policy: ``retryable``
False ends the dispatch at once (outcome ``error``, the exception's message as the
termination reason); ``retry_after`` (seconds) is the least wait before the next attempt,
which happens only if it fits before the deadline. Any other exception is retried as
before.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass

from ...types import DispatchTarget

__all__ = ["AttemptFailed", "DispatchAttempt", "current_attempt"]


@dataclass(frozen=True, slots=True)
class DispatchAttempt:
    """One attempt of a dispatch: its target, its number (1-based) and the dispatch's
    deadline on the event loop's clock (``loop.time()``)."""

    target: DispatchTarget
    attempt: int
    deadline: float

    def remaining(self) -> float:
        """Seconds left before the dispatch's deadline (never below 0)."""
        return max(0.0, self.deadline - asyncio.get_running_loop().time())


_current: ContextVar[DispatchAttempt | None] = ContextVar("jeeves_dispatch_attempt", default=None)


def current_attempt() -> DispatchAttempt | None:
    """The attempt running in this context, for a handler registered with
    ``wants_dispatch_attempt = True``; ``None`` elsewhere."""
    return _current.get()


class AttemptFailed(Exception):
    """A handler's failure with a retry verdict (see the module docstring)."""

    def __init__(
        self, message: str, *, retryable: bool = True, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
