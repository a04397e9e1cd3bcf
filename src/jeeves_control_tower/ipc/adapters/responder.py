"""Answering queries read from a broker (NATS, the gRPC hub): each in a task of its own,
at most ``max_concurrency`` at once, the rest waiting in arrival order (bounded).

Queries are answered concurrently, and a handler's ``asyncio.timeout`` binds to the task
that runs it, hence a task per query. Beyond ``max_concurrency`` running and ``pending``
waiting, :meth:`QueryRunner.offer` refuses (the query is dropped and reported as a slow
consumer, as nats-py does for a subscription).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["QueryRunner"]

Answer = Callable[[bytes, str, str], Coroutine[Any, Any, None]]
Spawn = Callable[[Coroutine[Any, Any, Any]], Any]


class QueryRunner:
    """Runs ``answer(data, reply_to, message_type)`` for each offered query (see the
    module docstring); ``answer`` must not raise. ``closing()`` stops the backlog from
    being drained once the transport closes. Event-loop-thread only."""

    def __init__(
        self,
        answer: Answer,
        spawn: Spawn,
        *,
        max_concurrency: int,
        pending: int,
        closing: Callable[[], bool],
    ) -> None:
        self._answer = answer
        self._spawn = spawn
        self.max_concurrency = max_concurrency
        self.pending = pending
        self._closing = closing
        self._running = 0
        self._backlog: deque[tuple[bytes, str, str]] = deque()

    @property
    def running(self) -> int:
        """Queries being answered now."""
        return self._running

    @property
    def waiting(self) -> int:
        """Queries waiting for a free slot."""
        return len(self._backlog)

    def offer(self, data: bytes, reply_to: str, message_type: str) -> bool:
        """Answer the query now, or queue it; ``False`` when the backlog is full."""
        if self._running < self.max_concurrency:
            self._running += 1
            self._spawn(self._run(data, reply_to, message_type))
            return True
        if len(self._backlog) >= self.pending:
            return False
        self._backlog.append((data, reply_to, message_type))
        return True

    def drop(self, reply_to: str) -> bool:
        """Forget the waiting query answering to ``reply_to`` (its caller gave up);
        whether one was waiting. A linear scan of the backlog."""
        for item in self._backlog:
            if item[1] == reply_to:
                self._backlog.remove(item)
                return True
        return False

    async def _run(self, data: bytes, reply_to: str, message_type: str) -> None:
        try:
            await self._answer(data, reply_to, message_type)
        finally:
            if self._backlog and not self._closing():
                self._spawn(self._run(*self._backlog.popleft()))  # the slot passes on
            else:
                self._running -= 1
