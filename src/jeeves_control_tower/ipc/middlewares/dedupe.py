"""Dedupe: drop a message whose id this process has already handled.

Broker transports deliver commands at least once: a command whose consumer died before
acknowledging it is delivered again, possibly to a process that already handled it (the
acknowledgement was lost) or twice to the same one (reclaimed while still running). Every
frame keeps its message id across redeliveries, so remembering the ids seen makes handling
effectively-once *per process*. Across processes, a handler must still be idempotent or
use a shared store: this middleware only knows what its process saw.

Contract: applies to messages with ``ctx.direction`` in ``directions`` (default ``"in"``:
what a transport delivered from a broker) and ``ctx.pattern`` in ``patterns`` (default
``"send"``). A duplicate is aborted (``ctx.outcome == "aborted"``; its handler does not
run). Memory is bounded: at most ``max_entries`` ids, each forgotten ``ttl`` seconds after
it was first seen. With ``forget_on_error`` an id whose handling failed is forgotten so a
redelivery can try again.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from ..bus.middleware import MiddlewareContext

__all__ = ["DedupeMiddleware"]


class DedupeMiddleware:
    """Middleware; event-loop-thread only."""

    def __init__(
        self,
        max_entries: int = 100_000,
        ttl: float = 3600.0,
        *,
        patterns: Iterable[str] = ("send",),
        directions: Iterable[str] = ("in",),
        forget_on_error: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be an int >= 1, got {max_entries!r}")
        if not isinstance(ttl, (int, float)) or ttl <= 0:
            raise ValueError(f"ttl must be > 0 seconds, got {ttl!r}")
        self.max_entries = max_entries
        self.ttl = float(ttl)
        self.patterns = frozenset(patterns)
        self.directions = frozenset(directions)
        self.forget_on_error = forget_on_error
        self.duplicates = 0
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, message_id: str) -> bool:
        first = self._seen.get(message_id)
        return first is not None and self._clock() - first < self.ttl

    def applies_to(self, pattern: str, direction: str) -> bool:
        """Only ``patterns`` x ``directions`` messages pass through this middleware (the
        bus skips it for the others; see :mod:`..bus.middleware`)."""
        return pattern in self.patterns and direction in self.directions

    def before(self, ctx: MiddlewareContext, message: Any) -> Any:
        if ctx.direction not in self.directions or ctx.pattern not in self.patterns:
            return message
        mid = ctx.message_id
        now = self._clock()
        first = self._seen.get(mid)
        if first is not None and now - first < self.ttl:
            self.duplicates += 1
            return None
        self._seen[mid] = now
        self._seen.move_to_end(mid)
        self._evict(now)
        return message

    def after(
        self, ctx: MiddlewareContext, message: Any, result: Any, error: BaseException | None
    ) -> Any:
        if (
            error is not None
            and self.forget_on_error
            and ctx.outcome != "aborted"
            and ctx.direction in self.directions
            and ctx.pattern in self.patterns
        ):
            self._seen.pop(ctx.message_id, None)
        return result

    def _evict(self, now: float) -> None:
        seen = self._seen
        while len(seen) > self.max_entries:
            seen.popitem(last=False)
        while seen:
            oldest = next(iter(seen.values()))
            if now - oldest < self.ttl:
                break
            seen.popitem(last=False)
