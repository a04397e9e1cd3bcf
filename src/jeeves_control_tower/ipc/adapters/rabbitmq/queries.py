"""Queries over RabbitMQ: direct reply-to on the asking side, a queue per type answering.

**Asking** (:class:`Requester`). One channel per transport, in publisher-confirm mode,
consumes RabbitMQ's direct reply-to pseudo-queue (``amq.rabbitmq.reply-to``, no ack, no
queue declared per query). A query is published to the default exchange with routing key
``{prefix}.qry.{type}``, ``mandatory`` set, its unguessable correlation id as
``correlation_id`` and ``message_id``, and the caller's timeout as its ``expiration``: a
query still queued when the caller gives up is dropped by the broker, never answered
late. When no process consumes the type its queue does not exist (it is auto-deleted with
its last consumer), RabbitMQ returns the message and the query fails at once with
:class:`NoHandlerError`. One window stays: a query routed in the instant the last
consumer is cancelled (the queue being deleted) is dropped, and confirmed, by the broker;
its caller gets ``TimeoutError``. The confirm is awaited beside the reply, not before it.

**Answering** (:class:`Responder`). Each responder consumes the type's queue with manual
acknowledgement and ``basic.qos`` ``prefetch``: at most that many queries run at once per
process (a task each), the rest wait *in the broker*, in priority order on a dispatch
queue (``x-max-priority``). A query is acknowledged after its reply was handed to the
client; the reply is published with ``mandatory=False`` (RabbitMQ 3.10 both delivers and
returns a mandatory direct reply-to reply). If the answering process dies first the query
is handed to another responder (at-least-once; the asking side takes the first reply).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ....types import LoggerProtocol
from ... import NoHandlerError, TransportError
from ..metrics import SENT, AdapterMetrics

#: The longest per-message TTL RabbitMQ accepts (2**32 - 1 ms, about 49.7 days): a longer
#: ``expiration`` is a channel error that also fails every other query on the channel. A
#: caller's longer timeout still holds on this side; the broker drops the query after this.
MAX_EXPIRATION = (2**32 - 1) / 1000

__all__ = ["REPLY_TO", "Requester", "Responder"]

REPLY_TO = "amq.rabbitmq.reply-to"

Spawn = Callable[[Coroutine[Any, Any, Any]], Any]
#: ``answer(body, reply_to) -> (corr, reply)``: the inbound side's answer to a query.
Answer = Callable[[bytes, str], Awaitable[tuple[str | None, bytes | None]]]


class Requester:
    """Sends queries and matches their replies (see the module docstring)."""

    def __init__(self, channel: Any, metrics: AdapterMetrics, spawn: Spawn) -> None:
        self.channel = channel
        self._metrics = metrics
        self._spawn = spawn
        self._waiting: dict[str, asyncio.Future[bytes]] = {}

    async def start(self) -> None:
        await self._consume_replies()
        self.channel.reopen_callbacks.add(self._reopened)

    async def _reopened(self, _sender: Any) -> None:
        await self._consume_replies()

    async def _consume_replies(self) -> None:
        underlay = await self.channel.get_underlay_channel()
        await underlay.basic_consume(REPLY_TO, self._on_reply, no_ack=True)

    async def _on_reply(self, message: Any) -> None:
        corr = message.header.properties.correlation_id
        future = self._waiting.get(corr) if isinstance(corr, str) else None
        if future is not None and not future.done():
            future.set_result(message.body)

    async def request(
        self, routing_key: str, body: bytes, corr: str, timeout: float, priority: int | None
    ) -> bytes:
        """The reply's body; :class:`NoHandlerError` when nothing consumes
        ``routing_key``, ``TimeoutError`` when no reply came within ``timeout``."""
        import aio_pika

        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[corr] = future
        message = aio_pika.Message(
            body,
            reply_to=REPLY_TO,
            correlation_id=corr,
            message_id=corr,
            expiration=min(max(timeout, 0.001), MAX_EXPIRATION),
            priority=priority,
        )
        try:
            publish = self._spawn(
                self.channel.default_exchange.publish(
                    message, routing_key, mandatory=True, timeout=timeout
                )
            )
            publish.add_done_callback(lambda task: self._published(task, future, routing_key))
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._waiting.pop(corr, None)

    def _published(self, task: asyncio.Task[Any], future: asyncio.Future[bytes], key: str) -> None:
        from aiormq.exceptions import PublishError

        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            self._metrics.wire(SENT, "query")
        elif not future.done():
            if isinstance(exc, PublishError):
                future.set_exception(NoHandlerError(f"no process answers {key!r}"))
            else:
                future.set_exception(
                    TransportError(f"query not sent to {key!r}: {type(exc).__name__}")
                )


class Responder:
    """Answers the queries of one queue (see the module docstring)."""

    def __init__(
        self,
        queue: Any,
        channel: Any,
        answer: Answer,
        *,
        seal: Callable[[bytes], bytes],
        metrics: AdapterMetrics,
        logger: LoggerProtocol,
        spawn: Spawn,
    ) -> None:
        self.queue = queue
        self.channel = channel
        self._answer = answer
        self._seal = seal
        self._metrics = metrics
        self._logger = logger
        self._spawn = spawn
        self._tag: str | None = None

    async def start(self) -> None:
        self._tag = await self.queue.consume(self._on_query, no_ack=False)

    async def stop(self) -> None:
        if self._tag is not None:
            with contextlib.suppress(Exception):  # bounded: a robust channel waits for
                async with asyncio.timeout(2.0):  # a connection that may never return
                    await self.queue.cancel(self._tag)
            self._tag = None

    async def _on_query(self, message: Any) -> None:
        self._spawn(self._run(message))

    async def _run(self, message: Any) -> None:
        import aio_pika

        try:
            reply_to = message.reply_to or ""
            corr, reply = await self._answer(message.body, reply_to)
            if reply is not None and reply_to:
                await self.channel.default_exchange.publish(
                    aio_pika.Message(self._seal(reply), correlation_id=corr),
                    reply_to,
                    mandatory=False,
                )
                self._metrics.wire(SENT, "reply")
        except Exception as exc:
            self._logger.warning("rabbitmq_reply_failed", error_type=type(exc).__name__)
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await message.ack()
