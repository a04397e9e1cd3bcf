"""The two halves of a message's observation by a
:class:`~jeeves_control_tower.ipc.telemetry.MessageProbe`, shared by the routes that report.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ...types import LoggerProtocol

__all__ = ["enter", "outcome_of", "probe_failed", "report"]

_perf = time.perf_counter


def enter(probe: Any, pattern: str) -> float:
    """The start of a message: counted in ``probe.inflight``; its start time."""
    inflight = probe.inflight
    inflight[pattern] = inflight.get(pattern, 0) + 1
    return _perf()


def report(
    probe: Any,
    logger: LoggerProtocol,
    pattern: str,
    direction: str,
    system: str,
    message_type: str,
    started: float,
    outcome: str,
    handlers: Any,
    error: Any,
    trace_id: int | None,
    message: Any,
) -> None:
    """The end of a message: one ``probe.message`` call (which takes it out of
    ``probe.inflight``). A probe that raises is logged, never raised into the message path."""
    try:
        probe.message(
            pattern, direction, system, message_type, started, outcome, handlers, error,
            trace_id, message,
        )  # fmt: skip
    except Exception as exc:
        probe_failed(logger, exc)


def probe_failed(logger: LoggerProtocol, exc: Exception) -> None:
    """Log a probe that raised (``message_probe_failed``): what every route does instead of
    raising it into the message path."""
    logger.error("message_probe_failed", error_type=type(exc).__name__, error=str(exc))


def outcome_of(exc: BaseException) -> str:
    """The outcome a message ends with when ``exc`` is raised through it."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "error"
