"""The ordered writer of event frames: one task hands them to the AMQP channel in order.

aio-pika's and aiormq's publish each run under ``asyncio.timeout`` (so only inside a
task) and wait for the socket write of every message; the event batcher hands frames over
from a loop callback, and a stream of events wants one write per burst, not per message.
:class:`EventWriter` queues each frame (routing key, bytes) and one task publishes them
through aiormq's ``basic_publish``, in order, waiting for the socket only at the end of
each burst (back-pressure for the next one).

While the connection is down the writer waits for it, and what is queued meanwhile goes
out, in order, once it is back: the queue is the transport's reconnect buffer (bounded by
the transport). The frames it holds while it cannot publish (``up()`` false, or its last
attempt failed) are reported through ``on_held(delta)``
(``commbus_transport_buffered_messages``) until they went out, or until :meth:`close`.
A frame handed to the client just before the connection dropped may be lost (events are
at-most-once); a frame the client refused is kept and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ....types import LoggerProtocol
from ... import TransportError
from ..wire import EventBatcher

__all__ = ["EventWriter", "outgoing_event"]


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
        up: Callable[[], bool] = lambda: True,
        on_held: Callable[[int], None] = lambda delta: None,
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
        self._up = up
        self._on_held = on_held
        self._held = 0  # frames reported as held (see the module docstring)

    @property
    def pending(self) -> int:
        """Frames not yet handed to the client."""
        return len(self._queue)

    @property
    def held(self) -> int:
        """Frames held because the connection is down (the reported gauge's share)."""
        return self._held

    def _report(self, held: int) -> None:
        delta, self._held = held - self._held, held
        if delta:
            with contextlib.suppress(Exception):  # telemetry never breaks the path
                self._on_held(delta)

    def write(self, item: tuple[str, bytes]) -> Coroutine[Any, Any, None] | None:
        """Queue one frame; returns a coroutine to await (back-pressure) when more than
        ``high_water`` frames are waiting, else ``None``."""
        self._queue.append(item)
        if self._held or not self._up():
            self._report(len(self._queue))
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
        """Stop the task; what it still held is gone (and no longer reported)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._report(0)

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
                    if self._held:
                        self._report(min(self._held, len(queue)))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the channel closed: wait for the robust reconnect
                self._report(len(queue))
                self._logger.debug("rabbitmq_event_write_retry", error_type=type(exc).__name__)
                with contextlib.suppress(Exception):
                    await asyncio.sleep(0.1)


def outgoing_event(
    writer: EventWriter,
    batcher: EventBatcher | None,
    up: bool,
    key: str,
    data: bytes,
    buffer_size: int,
    url: str,
) -> Awaitable[None] | None:
    """Hand one event frame to ``batcher`` (connected) or straight to ``writer``, after
    what was batched before it; the awaitable, when given, is the back-pressure. While the
    connection is down (``up`` false) the writer's queue is the reconnect buffer, bounded
    by ``buffer_size``: beyond it :class:`TransportError`."""
    if not up and writer.pending >= buffer_size:
        raise TransportError(
            f"{url} is unreachable and the reconnect buffer is full ({buffer_size} events)"
        )
    if batcher is None:
        return writer.write((key, data))
    if up:
        pending = batcher.add(key, data)
        if pending is not False:
            return pending
    taken = batcher.take(key)  # what was batched before goes first
    written = writer.write((key, data))
    if taken is None:
        return written
    return _in_turn(taken, written)


async def _in_turn(*pending: Awaitable[None] | None) -> None:
    for awaitable in pending:
        if awaitable is not None:
            await awaitable
