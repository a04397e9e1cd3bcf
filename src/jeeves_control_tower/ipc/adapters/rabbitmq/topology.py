"""The broker layout of one transport prefix, and the durable writes to it.

==========================  ==============================  =================================
name                        kind                            holds
==========================  ==============================  =================================
``{prefix}.events``         topic exchange (durable)        events; routing key = type
``{prefix}.evt.{process}``  queue, exclusive, auto-delete   this process's events, bound per
                                                            subscribed type
``{prefix}.cmd.{type}``     quorum queue (durable)          commands of ``type``, persistent
``{prefix}.qry.{type}``     queue, auto-delete              queries of ``type`` (exists while
                                                            a responder consumes it);
                                                            ``x-max-priority`` for dispatch
``{prefix}.dead``           fanout exchange + durable       dead-lettered commands, with
                            queue of the same name          ``x-jeeves-reason`` / ``-type``
==========================  ==============================  =================================

Every process declares what it uses with the same arguments (RabbitMQ refuses a
redeclaration with other arguments), so any of them may come first.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

from ....types import LoggerProtocol
from ... import TransportError
from ..metrics import AdapterMetrics
from ..services import DISPATCH_PREFIX
from .connection import Link
from .names import MAX_PRIORITY, routing_key

__all__ = ["Topology"]

#: Most dead-lettered messages kept (the oldest are dropped beyond it).
_DEAD_MAX = 10_000


class Topology:
    """Names, declarations, sends and dead letters (see the module docstring); the
    broker side works once :meth:`attach` gave it the connection."""

    def __init__(
        self,
        prefix: str,
        process_id: str,
        *,
        send_timeout: float,
        metrics: AdapterMetrics,
        logger: LoggerProtocol,
    ) -> None:
        self.prefix = prefix
        self.events_exchange = f"{prefix}.events"
        self.events_queue = f"{prefix}.evt.{process_id}"
        self.dead_letters = f"{prefix}.dead"
        self.commands: Any = None
        self.link: Link | None = None
        self.url: Any = None
        self.connect_options: dict[str, Any] = {}
        self.send_timeout = send_timeout
        self.metrics = metrics
        self.logger = logger
        self._command_queues: dict[str, Any] = {}
        self._dead_exchange: Any = None
        self._declaring: dict[str, asyncio.Future[Any]] = {}
        #: The durable queues and exchanges declared here, as ``(kind, name)`` pairs
        #: (``kind``: ``queue`` or ``exchange``): what outlives the processes.
        self.durable: set[tuple[str, str]] = set()

    def attach(self, commands: Any, link: Link, url: Any, connect_options: dict[str, Any]) -> None:
        """Work over ``commands``, a channel in publisher-confirm mode, of ``link``;
        durable queues are first created over a connection of their own to ``url``."""
        self.commands = commands
        self.link = link
        self.url = url
        self.connect_options = connect_options

    def command_queue(self, message_type: str) -> str:
        return f"{self.prefix}.cmd.{routing_key(message_type)}"

    def query_queue(self, message_type: str) -> str:
        return f"{self.prefix}.qry.{routing_key(message_type)}"

    @staticmethod
    def prioritised(message_type: str) -> bool:
        """Whether queries of ``message_type`` wait in a priority queue (dispatch)."""
        return message_type.startswith(DISPATCH_PREFIX)

    async def declare(self, events_channel: Any) -> tuple[Any, Any]:
        """Declare the events exchange, this process's events queue and the dead
        letters; ``(events exchange, events queue)``."""
        import aio_pika

        exchange = await events_channel.declare_exchange(
            self.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await events_channel.declare_queue(
            self.events_queue, exclusive=True, auto_delete=True
        )
        self._dead_exchange = await self.commands.declare_exchange(
            self.dead_letters, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dead = await self.commands.declare_queue(
            self.dead_letters, durable=True, arguments={"x-max-length": _DEAD_MAX}
        )
        await dead.bind(self._dead_exchange, "")
        self.durable |= {
            ("exchange", self.events_exchange),
            ("exchange", self.dead_letters),
            ("queue", self.dead_letters),
        }
        return exchange, queue

    async def command_queue_of(self, message_type: str) -> Any:
        """The (declared) durable quorum queue of ``message_type``'s commands; concurrent
        callers share one declaration."""
        queue = self._command_queues.get(message_type)
        if queue is not None:
            return queue
        declaring = self._declaring.get(message_type)
        if declaring is None:
            declaring = asyncio.ensure_future(self._declare_command_queue(message_type))
            self._declaring[message_type] = declaring
            declaring.add_done_callback(lambda _: self._declaring.pop(message_type, None))
        return await asyncio.shield(declaring)

    async def _declare_command_queue(self, message_type: str) -> Any:
        await self._create(self.command_queue(message_type), {"x-queue-type": "quorum"})
        queue = await self.commands.declare_queue(
            self.command_queue(message_type),
            durable=True,
            arguments={"x-queue-type": "quorum"},
        )
        self._command_queues[message_type] = queue
        self.durable.add(("queue", queue.name))
        return queue

    async def _create(self, name: str, arguments: dict[str, Any]) -> None:
        """Create a durable queue on a short-lived connection of its own: RabbitMQ 3.10
        answers two processes creating the same quorum queue at once by closing one's
        *connection* (INTERNAL_ERROR); that must not be the transport's connection. The
        loser retries after a short random pause (by then the queue exists)."""
        import aio_pika

        if self.url is None:
            return
        for attempt in range(6):
            try:
                connection = await aio_pika.connect(self.url, **self.connect_options)
                try:
                    channel = await connection.channel()
                    await channel.declare_queue(name, durable=True, arguments=arguments)
                    return
                finally:
                    with contextlib.suppress(Exception):
                        await connection.close()
            except Exception as exc:
                if attempt == 5:
                    raise
                self.logger.debug("rabbitmq_declare_retry", error_type=type(exc).__name__)
                await asyncio.sleep(0.05 + random.random() * 0.2 * (attempt + 1))

    async def query_queue_of(self, channel: Any, message_type: str) -> Any:
        """Declare the auto-delete queue of ``message_type``'s queries on ``channel``."""
        arguments = {"x-max-priority": MAX_PRIORITY} if self.prioritised(message_type) else None
        return await channel.declare_queue(
            self.query_queue(message_type), auto_delete=True, arguments=arguments
        )

    async def send(self, message_type: str, body: bytes, message_id: str) -> None:
        """Store one command durably: returns once RabbitMQ confirmed it. While the
        broker is unreachable it retries for up to ``send_timeout`` seconds, then raises
        :class:`TransportError`."""
        import aio_pika

        message = aio_pika.Message(
            body, message_id=message_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        )
        name = self.command_queue(message_type)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.send_timeout
        delay = 0.05
        link = self.link
        if link is None:
            raise TransportError("the RabbitMQ transport is not connected")
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TransportError(
                    f"command {message_type!r} not stored within {self.send_timeout}s:"
                    f" {link.url} is unreachable"
                )
            try:
                if not await link.wait_up(left):
                    continue
                async with asyncio.timeout(left):
                    await self.command_queue_of(message_type)
                    await self.commands.default_exchange.publish(message, name)
                return
            except Exception as exc:  # the connection dropped meanwhile: again, same id
                self.logger.debug("rabbitmq_send_retry", error_type=type(exc).__name__)
                await asyncio.sleep(min(delay, max(deadline - loop.time(), 0.0)))
                delay = min(delay * 2, 1.0)

    async def dead_letter(self, body: bytes, reason: str, message_type: str) -> None:
        """Copy a command to the dead letters (confirmed), count it, refresh the gauge."""
        import aio_pika

        try:
            await self._dead_exchange.publish(
                aio_pika.Message(
                    body,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    headers={"x-jeeves-reason": reason, "x-jeeves-type": message_type[:200]},
                ),
                "",
            )
            self.metrics.dead_lettered(message_type, reason)
            await self.dead_letter_depth()
        except Exception as exc:
            self.logger.error("rabbitmq_dead_letter_failed", error_type=type(exc).__name__)

    async def dead_letter_depth(self) -> int:
        """Messages in the dead-letter queue now (also ``commbus_dead_letter_messages``)."""
        underlay = await self.commands.get_underlay_channel()
        ok = await underlay.queue_declare(self.dead_letters, passive=True)
        depth = int(ok.message_count or 0)
        self.metrics.dead_letter_depth(self.dead_letters, depth)
        return depth
