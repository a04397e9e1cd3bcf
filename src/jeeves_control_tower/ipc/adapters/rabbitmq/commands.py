"""Durable commands: one quorum queue per command type, manual acknowledgement.

Every process handling a command type consumes the same durable quorum queue
``{prefix}.cmd.{type}``, so each command goes to exactly one of them. A command is
acknowledged after its handler ran; when the consuming process dies (or its channel
closes) before that, RabbitMQ hands the command to another consumer, and the quorum queue
counts the attempt (the ``x-delivery-count`` header). A command delivered more than
``max_deliveries`` times, or a frame the inbound side rejects (undecodable, another type),
is copied to the dead-letter exchange with the reason (``x-jeeves-reason`` header),
counted (``commbus_dead_letters_total``) and acknowledged, so it never loops. A command
whose type no longer has a local handler is returned to the queue for another process.

Ordering: one consumer runs its commands one at a time, in delivery order; at most
``prefetch`` are unacknowledged at once per process and type (``basic.qos``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from ....types import LoggerProtocol
from ..inbound import ACK, REJECT, REQUEUE
from ..metrics import AdapterMetrics

__all__ = ["CommandConsumer", "DeadLetter", "deliveries"]

#: ``dead_letter(body, reason)``: copy a frame to the dead-letter exchange.
DeadLetter = Callable[[bytes, str], Awaitable[None]]


def deliveries(message: Any) -> int:
    """How many times ``message`` has been delivered, this time included."""
    headers = message.headers or {}
    count = headers.get("x-delivery-count")
    return int(count) + 1 if isinstance(count, int) and count >= 0 else 1


class CommandConsumer:
    """Consumes one command queue into ``handle(body) -> ACK | REQUEUE | REJECT``."""

    def __init__(
        self,
        queue: Any,
        *,
        handle: Callable[[bytes], Awaitable[str]],
        dead_letter: DeadLetter,
        max_deliveries: int,
        metrics: AdapterMetrics,
        logger: LoggerProtocol,
    ) -> None:
        self.queue = queue
        self._handle = handle
        self._dead_letter = dead_letter
        self._max_deliveries = max_deliveries
        self._metrics = metrics
        self._logger = logger
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._tag: str | None = None

    async def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())
        self._tag = await self.queue.consume(self._inbox.put, no_ack=False)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop consuming; the command in hand finishes (for at most ``timeout`` s), the
        ones waiting go back to the queue (unacknowledged: RabbitMQ redelivers them)."""
        if self._tag is not None:
            with contextlib.suppress(Exception):  # bounded: a robust channel waits for
                async with asyncio.timeout(2.0):  # a connection that may never return
                    await self.queue.cancel(self._tag)
            self._tag = None
        if self._worker is not None:
            self._inbox.put_nowait(None)
            done, _ = await asyncio.wait({self._worker}, timeout=timeout)
            if not done:
                self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        while not self._inbox.empty():
            message = self._inbox.get_nowait()
            if message is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2.0):
                        await message.nack(requeue=True)

    async def _run(self) -> None:
        while True:
            message = await self._inbox.get()
            if message is None:
                return
            try:
                await self._one(message)
            except Exception as exc:  # never stop the consumer; unacked: redelivered later
                self._logger.error(
                    "rabbitmq_command_failed", queue=self.queue.name, error_type=type(exc).__name__
                )

    async def _one(self, message: Any) -> None:
        delivered = deliveries(message)
        if delivered > 1 or message.redelivered:
            self._metrics.redelivered()
        if delivered > self._max_deliveries:
            await self._dead_letter(message.body, "max_deliveries")
            await message.ack()
            return
        outcome = await self._handle(message.body)
        if outcome == ACK:
            await message.ack()
        elif outcome == REJECT:
            await self._dead_letter(message.body, "rejected")
            await message.ack()
        elif outcome == REQUEUE:
            await asyncio.sleep(0.05)  # not a hot loop while no local handler is left
            await message.nack(requeue=True)
