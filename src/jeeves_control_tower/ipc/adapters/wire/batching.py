"""Event batching: the events published in one loop iteration travel as one frame.

A broker message costs its client and server far more than the bytes in it; a stream of
small events (a loop of ``await bus.publish(...)``) spends most of its time in that
per-message cost. :class:`EventBatcher` holds the encoded event frames of each destination
until the end of the current event-loop iteration (or until a batch is full) and hands
them to the broker as one *batch frame* (:meth:`~.codec.WireCodec.encode_batch`); a
destination with a single pending frame sends that frame unchanged.

Contract:

- **Order** per destination is the order of :meth:`EventBatcher.add`: a full batch is
  handed to the broker client before the frame that did not fit is queued, and each
  hand-off starts synchronously (the bytes are in the client's buffer before anything else
  runs).
- **Latency**: a frame waits at most until the end of the loop iteration it was added in;
  nothing is held on a timer.
- **Back-pressure**: when the broker client pushes back on a full batch (its write buffer
  is over its limit), the publisher whose frame filled the batch waits for it.
- **Failures**: a batch is handed over after the publishers of its frames returned, so a
  batch the client refuses (the connection closed within that loop iteration) is logged
  and reported to ``on_dropped(count)``, never raised into an unrelated publisher and
  never silent. Transports send on their own (bypassing the batcher) while their
  connection is down, so that a full reconnect buffer is raised to the publisher.
- :meth:`flush` sends everything pending now (before a transport flushes or closes).

Event-loop-thread only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal

from ....types import LoggerProtocol
from ...bus.eager import Resume, start

__all__ = ["EventBatcher"]

Send = Callable[[tuple[str, bytes]], Awaitable[None]]
Spawn = Callable[[Coroutine[Any, Any, Any]], Any]


class EventBatcher:
    """Per-destination batches of encoded event frames (see the module docstring).

    ``send((destination, data))`` hands one frame to the broker client;
    ``wrap(frames)`` builds the batch frame of several; a batch holds at most
    ``max_frames`` frames and ``max_bytes`` bytes (frame bytes plus one per frame for the
    separators, plus ``overhead``).
    """

    __slots__ = (
        "_logger",
        "_on_dropped",
        "_open",
        "_scheduled",
        "_send",
        "_sizes",
        "_spawn",
        "_wrap",
        "max_bytes",
        "max_frames",
    )

    #: Bytes a batch frame adds around its frames (an upper bound for both formats).
    overhead = 32

    def __init__(
        self,
        send: Send,
        wrap: Callable[[list[bytes]], bytes],
        *,
        max_bytes: int,
        max_frames: int = 256,
        spawn: Spawn,
        logger: LoggerProtocol,
        on_dropped: Callable[[int], None],
    ) -> None:
        if max_frames < 1 or max_bytes <= self.overhead:
            raise ValueError(f"max_frames >= 1 and max_bytes > {self.overhead}")
        self._send = send
        self._wrap = wrap
        self.max_bytes = max_bytes
        self.max_frames = max_frames
        self._spawn = spawn
        self._logger = logger
        self._on_dropped = on_dropped
        self._open: dict[str, list[bytes]] = {}
        self._sizes: dict[str, int] = {}
        self._scheduled = False

    @property
    def pending(self) -> int:
        """Frames waiting for the end of the loop iteration."""
        return sum(len(frames) for frames in self._open.values())

    def add(self, destination: str, frame: bytes) -> Awaitable[None] | Literal[False] | None:
        """Queue ``frame`` for ``destination``. Returns an awaitable (that never raises)
        when a full batch was handed to the broker client and the client pushes back:
        the caller awaits it before publishing on; ``False`` when the frame is too big
        for any batch (send it on its own); else ``None``."""
        if len(frame) + 1 + self.overhead > self.max_bytes:
            return False
        frames = self._open.get(destination)
        if frames is None:
            self._open[destination] = [frame]
            self._sizes[destination] = len(frame) + 1
            if not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._end_of_iteration)
            return None
        size = self._sizes[destination] + len(frame) + 1
        if len(frames) < self.max_frames and size + self.overhead <= self.max_bytes:
            frames.append(frame)
            self._sizes[destination] = size
            return None
        # Full: hand the batch over now, then start the next one with this frame.
        self._open[destination] = [frame]
        self._sizes[destination] = len(frame) + 1
        return self._hand_over(destination, frames)

    def take(self, destination: str) -> Awaitable[None] | None:
        """Hand ``destination``'s pending frames to the broker client now (before a frame
        that must not overtake them is sent on its own); like :meth:`add`, returns an
        awaitable that never raises when the client pushes back."""
        frames = self._open.pop(destination, None)
        if frames is None:
            return None
        del self._sizes[destination]
        return self._hand_over(destination, frames)

    async def flush(self) -> None:
        """Hand every pending batch to the broker client now."""
        for destination in list(self._open):
            pending = self.take(destination)
            if pending is not None:
                await pending

    def _hand_over(self, destination: str, frames: list[bytes]) -> Awaitable[None] | None:
        data = frames[0] if len(frames) == 1 else self._wrap(frames)
        try:
            result = start(self._send, True, (destination, data))
        except Exception as exc:
            self._dropped(destination, len(frames), exc)
            return None
        if result.__class__ is Resume:
            return self._finish(destination, len(frames), result)
        return None

    def _end_of_iteration(self) -> None:
        self._scheduled = False
        for destination in list(self._open):
            pending = self.take(destination)
            if pending is not None:  # the client is pushing back: finish in a task
                self._spawn(pending)  # type: ignore[arg-type]  # a coroutine (_finish)

    async def _finish(self, destination: str, count: int, pending: Awaitable[None]) -> None:
        try:
            await pending
        except Exception as exc:
            self._dropped(destination, count, exc)

    def _dropped(self, destination: str, count: int, exc: BaseException) -> None:
        self._logger.error(
            "event_batch_dropped",
            destination=destination,
            events=count,
            error_type=type(exc).__name__,
            error=str(exc),
        )
        with contextlib.suppress(Exception):  # metrics never break messaging
            self._on_dropped(count)
