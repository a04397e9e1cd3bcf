"""Keeping a transport's broker consumption in step with what the bus has registered."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ...types import LoggerProtocol

__all__ = ["Consumption"]

#: ``(pattern, message type)``: one destination consumed on the broker.
Key = tuple[str, str]


class Consumption:
    """Which ``(pattern, message type)`` destinations a transport consumes, brought in
    line with ``wanted()`` by :meth:`refresh` through ``start(pattern, type)`` and
    ``stop(pattern, type)`` (the transport's ``_start_consuming`` / ``_stop_consuming``).

    Refreshes never overlap (one lock); a change signalled while one runs
    (:meth:`changed`) makes it go round again. :meth:`changed` schedules a background
    refresh that retries with back-off (50 ms doubling to 2 s, each failure logged as
    ``transport_refresh_failed``) until it succeeds or :meth:`close` is called.
    Event-loop-thread only.
    """

    def __init__(
        self,
        wanted: Callable[[], set[Key]],
        start: Callable[[str, str], Awaitable[None]],
        stop: Callable[[str, str], Awaitable[None]],
        logger: LoggerProtocol,
    ) -> None:
        self._wanted = wanted
        self._start = start
        self._stop = stop
        self._logger = logger
        self._consuming: set[Key] = set()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._dirty = False
        self._closed = False

    async def refresh(self) -> None:
        """Start consuming what is wanted and not consumed, stop what is consumed and no
        longer wanted; again while changes arrive meanwhile."""
        async with self._lock:
            while not self._closed:
                self._dirty = False
                want = self._wanted()
                for key in sorted(self._consuming - want):
                    self._consuming.discard(key)
                    await self._stop(*key)
                for key in sorted(want - self._consuming):
                    await self._start(*key)
                    self._consuming.add(key)
                if not self._dirty:
                    return

    async def sync(self) -> None:
        """Wait until every change signalled so far is reflected on the broker."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)
        await self.refresh()

    def changed(self) -> None:
        """What is wanted changed: refresh in the background (once at a time)."""
        self._dirty = True
        if self._closed or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(self._background_refresh())

    async def _background_refresh(self) -> None:
        delay = 0.05
        while not self._closed:
            try:
                await self.refresh()
                return
            except Exception as exc:
                self._logger.error(
                    "transport_refresh_failed", error_type=type(exc).__name__, error=str(exc)
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def close(self) -> None:
        """No refresh from now on (a background one is cancelled)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()

    async def stop_all(self) -> None:
        """Stop consuming everything (a failure is logged, the rest still stopped)."""
        for key in sorted(self._consuming):
            self._consuming.discard(key)
            try:
                await self._stop(*key)
            except Exception as exc:
                self._logger.warning("transport_stop_failed", error=str(exc))
