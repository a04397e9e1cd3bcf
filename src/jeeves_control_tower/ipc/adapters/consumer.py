"""The lifecycle every durable command consumer shares: one task, a graceful stop."""

from __future__ import annotations

import asyncio


class ConsumerLoop:
    """Runs :meth:`_run` in one task from :meth:`start` until :meth:`stop`.

    Subclasses loop ``while not self._stopping`` and set ``self._reading`` while they wait
    on the broker with nothing in hand: a stop then cancels the read at once (nothing is
    lost: what the broker handed out but was not acknowledged comes back). A command being
    handled is finished first, for at most ``timeout`` seconds.
    """

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._reading = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        task = self._task
        if task is None:
            return
        if self._reading:
            task.cancel()
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await self._closed()

    async def _run(self) -> None:
        raise NotImplementedError

    async def _closed(self) -> None:
        """Release what the loop held, after it ended."""
