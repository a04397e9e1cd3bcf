"""Ordered writes on one gRPC stream, started in the caller when the stream is idle.

gRPC allows one write at a time on a stream. A writer task that waits for messages costs
every message a trip through the event loop before its bytes reach gRPC; on a round trip
through the hub (four writes) that is most of what the hub adds. :class:`StreamWriter`
starts the write of a message put while no write is running at once, in the caller
(eagerly, :func:`~...bus.eager.start`): gRPC has the bytes before :meth:`put` returns, and
the rest of a write that has to wait (for its completion, flow control) carries on from
its future's callback (:class:`~.carry.Carry`, not a task), writing whatever was put
meanwhile, in order. Event-loop-thread only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from ...bus.eager import Resume, start
from .carry import Carry

__all__ = ["StreamWriter"]


class StreamWriter:
    """``put(message)`` writes with ``write`` after everything put before it.

    ``failed(exc)`` is told when a write raised (the stream is broken: what is still
    queued is dropped); :meth:`close` cancels a write that waits."""

    __slots__ = ("_carry", "_failed", "_queue", "_running", "_write")

    def __init__(
        self,
        write: Callable[[Any], Coroutine[Any, Any, Any]],
        failed: Callable[[BaseException], None],
    ) -> None:
        self._write = write
        self._failed = failed
        self._queue: deque[Any] = deque()
        self._running = False
        self._carry: Carry | None = None

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
            self._carry = Carry(result, self._ended)

    async def _drain(self, _: None) -> None:
        queue, write = self._queue, self._write
        while queue:
            await write(queue.popleft())
        self._running = False

    def _ended(self, exc: BaseException | None) -> None:
        self._carry = None
        if exc is not None:
            self._stopped(exc)

    def close(self) -> None:
        """Cancel the write that waits, if any (what is queued is dropped)."""
        carry = self._carry
        if carry is not None:
            carry.cancel()

    def _stopped(self, exc: BaseException) -> None:
        self._queue.clear()
        self._running = False
        if isinstance(exc, Exception):
            self._failed(exc)
