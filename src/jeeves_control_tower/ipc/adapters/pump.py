"""An ordered, bounded executor for frames read off one broker subscription.

A reader that awaited each handler would let one slow subscriber stall every other
subscription on its connection; one task per frame would lose ordering and cost a task
each. A pump owns one worker task per destination that runs the handler for each frame,
one at a time, in arrival order. Each frame runs in its own copy of the context (trace
context attached while handling one frame never leaks into the next), and each handler
starts and finishes inside the worker task, so ``asyncio.timeout`` and
``asyncio.current_task()`` in a handler refer to the task that actually runs it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from contextvars import copy_context
from typing import Any

from ..bus.eager import Resume, start_in

__all__ = ["OrderedPump", "reraise_if_stopping"]

Handler = Callable[[bytes], Coroutine[Any, Any, Any]]


class OrderedPump:
    """``push(frame)`` runs ``handler(frame)`` after every frame pushed before it.

    ``max_pending`` bounds the frames waiting behind a slow handler: ``push`` then
    returns an awaitable (:meth:`wait_below`) the reader should await before reading on,
    so back-pressure reaches the broker instead of memory growing. :meth:`offer` (for
    readers that cannot wait) also refuses a frame once ``max_pending_bytes`` are waiting
    (a batch frame carries many events). The handler must catch its own exceptions;
    anything that escapes is passed to ``on_error``.
    """

    __slots__ = (
        "_bytes",
        "_drained",
        "_handler",
        "_on_error",
        "_queue",
        "_spawn",
        "_task",
        "_waiting",
        "_wake",
        "max_pending",
        "max_pending_bytes",
    )

    def __init__(
        self,
        handler: Handler,
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
        on_error: Callable[[BaseException], None],
        max_pending: int = 10_000,
        max_pending_bytes: int = 64 << 20,
    ) -> None:
        self._handler = handler
        self._spawn = spawn
        self._on_error = on_error
        self._queue: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._waiting = False
        self._task: asyncio.Task[Any] | None = None
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self._bytes = 0  # of the frames queued

    @property
    def pending(self) -> int:
        return len(self._queue)

    def offer(self, frame: bytes) -> bool:
        """Queue ``frame`` unless ``max_pending`` frames are waiting (then ``False``: the
        caller drops it), or ``max_pending_bytes`` are. For readers that cannot wait."""
        if len(self._queue) >= self.max_pending or self._bytes >= self.max_pending_bytes:
            return False
        self._bytes += len(frame)
        self._queue.append(frame)
        if self._task is None:
            self._task = self._spawn(self._run())
        elif self._waiting:
            self._wake.set()
        return True

    def push(self, frame: bytes) -> Coroutine[Any, Any, None] | None:
        """Queue ``frame``; returns :meth:`wait_below` to await when the pump is full."""
        self._bytes += len(frame)
        self._queue.append(frame)
        if self._task is None:
            self._task = self._spawn(self._run())
        elif self._waiting:
            self._wake.set()
        return self.wait_below() if len(self._queue) >= self.max_pending else None

    async def _run(self) -> None:
        queue = self._queue
        drained = self._drained
        while True:
            while queue:
                if not drained.is_set() and len(queue) < self.max_pending // 2:
                    drained.set()
                frame = queue.popleft()
                self._bytes -= len(frame)
                try:
                    result = start_in(copy_context(), self._handler, True, frame)
                    if result.__class__ is Resume:
                        await result
                except Exception as exc:
                    self._on_error(exc)
                except asyncio.CancelledError as exc:
                    # Unless close() is stopping the worker, the handler raised it itself:
                    # a failed frame. Ending the worker would strand every later frame.
                    reraise_if_stopping()
                    self._on_error(exc)
            self._drained.set()
            self._wake.clear()
            self._waiting = True
            try:
                await self._wake.wait()
            finally:
                self._waiting = False

    async def wait_below(self) -> None:
        """Wait until the queue has drained below half of ``max_pending``."""
        while len(self._queue) >= self.max_pending // 2 and self._task is not None:
            self._drained.clear()
            await self._drained.wait()

    async def close(self) -> None:
        """Stop the worker; frames still queued are dropped (the reader is gone)."""
        task, self._task = self._task, None
        self._queue.clear()
        self._bytes = 0
        self._drained.set()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def reraise_if_stopping() -> None:
    """Inside ``except CancelledError``: re-raise when this task is being cancelled (the
    consumer is stopping). Otherwise the handler raised ``CancelledError`` itself (it
    awaited something that was cancelled): that is a failed delivery, to be logged like
    any handler error, never a reason to end the consumer and strand every later
    message of the type."""
    task = asyncio.current_task()
    if task is None or task.cancelling():
        raise
