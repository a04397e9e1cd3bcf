"""The ordered writer of event frames: one task hands them to the AMQP channel in order.

aio-pika's and aiormq's publish each run under ``asyncio.timeout`` (so only inside a
task) and wait for the socket write of every message; the event batcher hands frames over
from a loop callback, and a stream of events wants one write per burst, not per message.
:class:`EventWriter` queues each frame (routing key, bytes) and one task publishes them
through aiormq's ``basic_publish``, in order, waiting for the socket only at the end of
each burst (back-pressure for the next one).

While the connection is down the writer waits for it, and what is queued meanwhile goes
out, in order, once it is back: the queue is the transport's reconnect buffer (bounded by
the transport). A frame handed to the client just before the connection dropped may be
lost (events are at-most-once); a frame the client refused is kept and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from ....types import LoggerProtocol

__all__ = ["EventWriter"]


class EventWriter:
    """Publishes ``(routing_key, body)`` frames to ``exchange`` over the robust aio-pika
    ``channel`` (see the module docstring). Its task lives until :meth:`close` (the
    transport's ``_disconnect``, after a bounded wait for :meth:`drained`).
    Event-loop-thread only."""

    def __init__(
        self,
        channel: Any,
        exchange: str,
        *,
        seal: Callable[[bytes], bytes],
        logger: LoggerProtocol,
        high_water: int = 1000,
    ) -> None:
        from pamqp.commands import Basic

        self._props = Basic.Properties(delivery_mode=1)
        self._channel = channel
        self._exchange = exchange
        self._seal = seal
        self._logger = logger
        self.high_water = high_water
        self._queue: deque[tuple[str, bytes]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[Any] | None = None

    @property
    def pending(self) -> int:
        """Frames not yet handed to the client."""
        return len(self._queue)

    def write(self, item: tuple[str, bytes]) -> Coroutine[Any, Any, None] | None:
        """Queue one frame; returns a coroutine to await (back-pressure) when more than
        ``high_water`` frames are waiting, else ``None``."""
        self._queue.append(item)
        self._idle.clear()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._wake.set()
        return self.drained() if len(self._queue) > self.high_water else None

    async def send(self, item: tuple[str, bytes]) -> None:
        """:meth:`write`, awaiting the back-pressure (the batcher's ``send``)."""
        pending = self.write(item)
        if pending is not None:
            await pending

    async def drained(self) -> None:
        """Wait until every frame queued so far was handed to the client."""
        await self._idle.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                channel = await self._channel.get_underlay_channel()
                while queue:
                    key, data = queue[0]
                    last = len(queue) == 1
                    await channel.basic_publish(
                        self._seal(data),
                        exchange=self._exchange,
                        routing_key=key,
                        properties=self._props,
                        wait=last,
                    )
                    queue.popleft()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the channel closed: wait for the robust reconnect
                self._logger.debug("rabbitmq_event_write_retry", error_type=type(exc).__name__)
                with contextlib.suppress(Exception):
                    await asyncio.sleep(0.1)
