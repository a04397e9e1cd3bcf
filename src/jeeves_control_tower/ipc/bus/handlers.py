"""A registered handler and the argument checks of registration.

Everything the hot path needs about a handler (is it async, its name for logs and spans)
is computed once, when it is registered.
"""

from __future__ import annotations

import math
from typing import Any

from ...types import LoggerProtocol
from ..messages import HandlerFunc
from .eager import is_async_callable

__all__ = [
    "HandlerEntry",
    "check_handler",
    "check_name",
    "check_timeout",
    "command_failed",
    "handler_name",
    "subscriber_failed",
]


class HandlerEntry:
    """A registered subscriber or handler, with what the hot path needs precomputed."""

    __slots__ = ("fn", "is_async", "name", "names")

    def __init__(self, fn: HandlerFunc) -> None:
        self.fn = fn
        self.is_async = is_async_callable(fn)
        self.name = handler_name(fn)
        #: ``(name,)``: what a message probe is told this handler was, made once (a tuple
        #: of a string: a record holding it is nothing the garbage collector tracks).
        self.names = (self.name,)


def handler_name(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(type(fn), "__qualname__", None)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module and name else str(name or repr(fn))


def check_name(value: Any, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")


def check_handler(handler: Any) -> None:
    if not callable(handler):
        raise TypeError(f"handler must be callable, got {type(handler).__name__}")


def check_timeout(value: Any, what: str) -> None:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")


def subscriber_failed(
    logger: LoggerProtocol, message_type: str, sub: HandlerEntry, exc: BaseException
) -> None:
    """Log a subscriber's error (a publish never raises it)."""
    logger.error(
        "subscriber_failed",
        message_type=message_type,
        handler=sub.name,
        error_type=type(exc).__name__,
        error=str(exc),
    )


def command_failed(
    logger: LoggerProtocol, message_type: str, handler: HandlerEntry, exc: BaseException
) -> None:
    """Log a command handler's error (a send never raises it)."""
    logger.error(
        "command_failed",
        message_type=message_type,
        handler=handler.name,
        error_type=type(exc).__name__,
        error=str(exc),
    )
