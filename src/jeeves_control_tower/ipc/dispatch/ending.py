"""How a dispatch ends, for :class:`~.dispatcher.Dispatcher`: the internal signal of a
non-``ok`` end (:class:`Ended`), the retry-or-end decision after a failed attempt, an
attempt's entry in ``envelope.processing_history``, and the terminated envelope."""

from __future__ import annotations

import time
from typing import Any

from ...types import DispatchTarget, Envelope, LoggerProtocol
from .attempt import AttemptFailed

__all__ = ["Ended", "record_attempt", "retry_or_end", "terminate"]


class Ended(Exception):
    """Raised and caught inside the dispatcher: the dispatch ended with a non-ok
    ``outcome`` for ``reason`` (``error``: what caused it, if anything)."""

    def __init__(self, outcome: str, reason: str, error: BaseException | None = None) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason
        self.error = error
        self.attempts = 0
        self.envelope: Envelope | None = None  # already terminated elsewhere (remote)


def retry_or_end(
    target: DispatchTarget, attempt: int, error: BaseException, deadline: float, retry_at: float
) -> Ended | None:
    """After attempt ``attempt`` failed with ``error``: ``None`` to retry at ``retry_at``
    (loop time), else how the dispatch ends (not retryable, out of retries, or the retry
    would start at or past ``deadline``)."""
    described = f"{type(error).__name__}: {error}"
    name = target.service_name
    if isinstance(error, AttemptFailed) and not error.retryable:
        return Ended(
            "error",
            f"service {name!r} failed after {attempt} attempt(s), not retryable: {described}",
            error,
        )
    if attempt > target.max_retries:
        return Ended(
            "error", f"service {name!r} failed after {attempt} attempt(s): {described}", error
        )
    if retry_at >= deadline:
        return Ended(
            "error",
            f"service {name!r} failed after {attempt} attempt(s), no time left before the"
            f" deadline to retry: {described}",
            error,
        )
    return None


def record_attempt(
    envelope: Envelope,
    target: DispatchTarget,
    attempt: int,
    outcome: str,
    began: float,
    error: BaseException | None,
) -> None:
    """Append attempt ``attempt``'s entry (``began``: its ``time.perf_counter()`` start) to
    ``envelope.processing_history``."""
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


def terminate(
    envelope: Envelope, target: DispatchTarget, ended: Ended, logger: LoggerProtocol
) -> Envelope:
    """``envelope`` terminated with ``ended``'s reason, the error recorded and logged."""
    envelope.terminate(ended.reason)
    envelope.errors.append(
        {
            "service": target.service_name,
            "method": target.method,
            "outcome": ended.outcome,
            "reason": ended.reason,
        }
    )
    logger.warning(
        "dispatch_ended",
        service=target.service_name,
        method=target.method,
        outcome=ended.outcome,
        reason=ended.reason,
    )
    return envelope
