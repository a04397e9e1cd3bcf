"""Ordered writes on one gRPC stream, started in the caller when the stream is idle.

gRPC allows one write at a time on a stream. A writer task that waits for messages costs
every message a trip through the event loop before its bytes reach gRPC; on a round trip
through the hub (four writes) that is most of what the hub adds. :class:`StreamWriter`
starts the write of a message put while no write is running at once, in the caller
(eagerly, :func:`~...bus.eager.start`): gRPC has the bytes before :meth:`put` returns, and
a task only carries on when the write has to wait (flow control), writing whatever was
put meanwhile, in order. Event-loop-thread only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from ...bus.eager import Resume, start

__all__ = ["StreamWriter"]


class StreamWriter:
    """``put(message)`` writes with ``write`` after everything put before it.

    ``spawn(coro)`` runs the rest of a write that had to wait; ``failed(exc)`` is told
    when a write raised (the stream is broken: what is still queued is dropped)."""

    __slots__ = ("_failed", "_queue", "_running", "_spawn", "_write")

    def __init__(
        self,
        write: Callable[[Any], Coroutine[Any, Any, Any]],
        spawn: Callable[[Coroutine[Any, Any, Any]], Any],
        failed: Callable[[BaseException], None],
    ) -> None:
        self._write = write
        self._spawn = spawn
        self._failed = failed
        self._queue: deque[Any] = deque()
        self._running = False

    @property
    def idle(self) -> bool:
        return not self._running

    def put(self, message: Any) -> None:
        self._queue.append(message)
        if self._running:
            return
        self._running = True
        try:
            result = start(self._drain, True, None)
        except BaseException as exc:  # the first write failed at once
            self._stopped(exc)
            return
        if result.__class__ is Resume:
            self._spawn(self._finish(result))

    async def _drain(self, _: None) -> None:
        queue, write = self._queue, self._write
        while queue:
            await write(queue.popleft())
        self._running = False

    async def _finish(self, rest: Resume) -> None:
        try:
            await rest
        except BaseException as exc:
            self._stopped(exc)
            raise

    def _stopped(self, exc: BaseException) -> None:
        self._queue.clear()
        self._running = False
        if isinstance(exc, Exception):
            self._failed(exc)
