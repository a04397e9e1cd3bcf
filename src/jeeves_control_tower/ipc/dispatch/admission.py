"""Per-service concurrency slots with a priority wait queue.

A service admits at most ``capacity()`` attempts at once. When it is full, callers wait in
priority order (lower rank first), first-in first-out within a rank. A released slot is
handed straight to the next live waiter, so a newcomer can never overtake the queue.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

__all__ = ["Admission", "QueueFull"]


class QueueFull(Exception):
    """The service's wait queue is at its bound."""


class Admission:
    """Slots for one service. Event-loop-thread only; not thread-safe.

    ``capacity`` is read on every acquire/release so a changed ``max_concurrent`` takes
    effect at once (a lowered capacity drains as running attempts finish). ``in_use`` (slots
    taken) and ``queue_depth`` (callers waiting for a slot, not yet granted or cancelled)
    are read-only outside this class; ``on_change()`` is called after every change of
    either.
    """

    __slots__ = (
        "_capacity",
        "_max_queue",
        "_seq",
        "_waiters",
        "in_use",
        "on_change",
        "queue_depth",
    )

    def __init__(
        self,
        capacity: Callable[[], int],
        max_queue: int | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._capacity = capacity
        self._max_queue = max_queue
        self.in_use = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self.queue_depth = 0  # waiters not yet granted or cancelled
        self._seq = itertools.count()
        self.on_change = on_change

    def try_acquire(self) -> bool:
        """Take a slot without waiting if one is free and nobody is queued."""
        if self.queue_depth == 0 and self.in_use < self._capacity():
            self.in_use += 1
            on_change = self.on_change  # perf: inline, every dispatch (not _changed)
            if on_change is not None:
                on_change()
            return True
        return False

    async def acquire(self, rank: int) -> None:
        """Wait for a slot. Cancelling the caller leaves no slot or queue entry behind.

        Raises :class:`QueueFull` when the queue is at its bound.
        """
        if self.try_acquire():
            return
        if self._max_queue is not None and self.queue_depth >= self._max_queue:
            raise QueueFull(f"{self.queue_depth} dispatches already waiting")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (rank, next(self._seq), fut))
        self.queue_depth += 1
        self._changed()
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                # The slot was handed to us just as we were cancelled: pass it on.
                self.release()
            elif not fut.done():
                fut.cancel()
                self.queue_depth -= 1
                self._changed()
            elif fut.cancelled():  # cancelled while queued; the heap entry is skipped later
                self.queue_depth -= 1
                self._changed()
            raise  # (closed: close() already took the entry out of the count)

    def close(self, error: BaseException) -> None:
        """Fail every waiter with ``error`` (the service went away)."""
        for _, _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(error)
        self._waiters.clear()
        self.queue_depth = 0
        self._changed()

    def release(self) -> None:
        """Give back a slot; the next live waiter (if any) gets one."""
        self.in_use -= 1
        if self._waiters:
            self._grant()
        on_change = self.on_change  # perf: inline, every dispatch (not _changed)
        if on_change is not None:
            on_change()

    def refill(self) -> None:
        """Admit waiters after the capacity was raised."""
        self._grant()
        self._changed()

    def _grant(self) -> None:
        waiters = self._waiters
        while waiters and self.in_use < self._capacity():
            _, _, fut = heapq.heappop(waiters)
            if fut.done():  # cancelled while waiting
                continue
            self.queue_depth -= 1
            self.in_use += 1
            fut.set_result(None)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
