"""RabbitMQTransport: the bus over RabbitMQ (``amqp://``, ``amqps://``), on aio-pika.

========  ==========================================  =====================================
pattern   RabbitMQ                                    guarantee
========  ==========================================  =====================================
publish   topic exchange ``{prefix}.events``, routing  every process subscribed *now*;
          key = type, one exclusive auto-delete       at-most-once; in order per producer
          queue per process                           and type
send      durable quorum queue ``{prefix}.cmd.{type}``  exactly one process; at-least-once;
          persistent messages, publisher confirms,    durable; redelivered when a consumer
          manual ack after the handler                dies; dead-lettered after
                                                      ``max_deliveries``
query     queue ``{prefix}.qry.{type}`` (auto-delete), one process answers, or
          direct reply-to, ``expiration`` = timeout   NoHandlerError (at once) / TimeoutError
========  ==========================================  =====================================

Layout and names: :mod:`.topology`; queries: :mod:`.queries`; commands: :mod:`.commands`.

``publish`` returns once the event is queued, in order, for the client: the events of one
type published in one loop iteration travel as one batch frame (:mod:`..wire.batching`).
While the broker is unreachable, events wait in a bounded buffer (``buffer_size`` events,
default 10,000; beyond that ``publish`` raises :class:`TransportError`) and go out on
reconnect. ``send`` returns once RabbitMQ confirmed the command (stored); while the broker
is unreachable it retries for up to ``send_timeout`` seconds, then raises
:class:`TransportError`. Queries fail at once with :class:`TransportError` while the
broker is unreachable. ``connect`` fails fast (one attempt, ``connect_timeout``, 2 s) with
a :class:`TransportError` naming the server with its credentials replaced by ``***``; once
connected the client reconnects by itself, forever, and restores its queues, bindings and
consumers. Credentials are never logged.

Remote dispatch (``RemoteServices``) queries wait in a priority queue per service
(``x-max-priority``): the ``SchedulingPriority`` of the dispatch becomes the AMQP message
priority (realtime 9, high 7, normal 5, low 3, idle 1), and a process takes at most
``dispatch_prefetch`` of them at once, so a saturated service's backlog waits in the
broker and is handed out highest priority first, across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Awaitable
from contextvars import ContextVar
from typing import Any, Self

from yarl import URL

from ... import InMemoryCommBus, MiddlewareContext, TransportError
from ..base import BrokerTransport, TransportFeatures, redact_url
from ..description import ChannelDescription, ServerDescription
from ..pump import OrderedPump
from ..services import DISPATCH_PREFIX
from ..wire import TAG_BYTES, EventBatcher
from .commands import CommandConsumer
from .connection import Link, open_channels, open_connection, scrub
from .contract import rabbitmq_channel, rabbitmq_server
from .events import EventWriter, outgoing_event
from .names import priority_of, routing_key
from .queries import Requester, Responder
from .topology import Topology

__all__ = ["RabbitMQTransport"]

_PENDING = 10_000
_BATCH_FRAMES = 256
_BATCH_BYTES = 256 << 10

#: The AMQP priority of the query being sent (set by :meth:`RabbitMQTransport.query`).
_PRIORITY: ContextVar[int | None] = ContextVar("jeeves_rabbitmq_priority", default=None)


class RabbitMQTransport(BrokerTransport):
    """``transport = await RabbitMQTransport.connect(bus, "amqp://guest:guest@localhost/")``.

    Options: ``prefix`` (name namespace, default ``"jeeves"``), ``max_deliveries``
    (default 10), ``prefetch`` (unacknowledged commands per type and process, default 10),
    ``dispatch_prefetch`` (remote dispatches a process takes at once, default 1: the rest
    wait in the broker, by priority), ``send_timeout`` (30 s), ``buffer_size`` (events
    held while disconnected, 10,000), ``connect_timeout`` (2 s), ``ssl_context`` (for
    ``amqps://``), ``batch_events`` (default ``True``), and those of
    :class:`BrokerTransport`.
    """

    system = "rabbitmq"
    default_port = 5672
    features = TransportFeatures("rabbitmq")

    def __init__(
        self,
        bus: InMemoryCommBus,
        url: str = "amqp://guest:guest@localhost:5672/",
        *,
        prefix: str = "jeeves",
        max_deliveries: int = 10,
        prefetch: int = 10,
        dispatch_prefetch: int = 1,
        send_timeout: float = 30.0,
        buffer_size: int = 10_000,
        connect_timeout: float = 2.0,
        ssl_context: ssl.SSLContext | None = None,
        batch_events: bool = True,
        **options: Any,
    ) -> None:
        if not re.match(r"^[A-Za-z0-9_.-]{1,40}$", prefix):
            raise ValueError("a RabbitMQ prefix is 1-40 letters, digits, '_', '.' or '-'")
        super().__init__(bus, prefix=prefix, **options)
        if min(max_deliveries, prefetch, dispatch_prefetch) < 1 or buffer_size < 0:
            raise ValueError("max_deliveries, prefetch, dispatch_prefetch >= 1; buffer_size >= 0")
        if send_timeout <= 0 or connect_timeout <= 0:
            raise ValueError("send_timeout and connect_timeout must be > 0")
        scheme, sep, _ = url.partition("://")
        if not sep or scheme.lower() not in ("amqp", "amqps"):
            raise ValueError(
                f"not a RabbitMQ URL: {redact_url(url)!r}"
                " (amqp://USER:PASSWORD@HOST:PORT/VHOST or amqps://...)"
            )
        self._url = url
        self.url = redact_url(url)
        if scheme.lower() == "amqps" and ssl_context is None:
            ssl_context = ssl.create_default_context()
        self._ssl = ssl_context
        self.max_deliveries = max_deliveries
        self.prefetch = prefetch
        self.dispatch_prefetch = dispatch_prefetch
        self.send_timeout = float(send_timeout)
        self.buffer_size = buffer_size
        self.connect_timeout = float(connect_timeout)
        self.batch_events = bool(batch_events)
        self._link: Link | None = None
        #: The broker layout (names, declarations, dead letters): :mod:`.topology`.
        self.topology = Topology(
            prefix,
            self.process_id,
            send_timeout=self.send_timeout,
            metrics=self.metrics,
            logger=self.logger,
        )
        self._connected = False
        self._exchange: Any = None
        self._events_queue: Any = None
        self._channels: dict[str, Any] = {}
        self._requester: Requester | None = None
        self._batcher: EventBatcher | None = None
        self._writer: EventWriter | None = None
        self._pumps: dict[str, OrderedPump] = {}  # routing key -> pump of its events
        self._responders: dict[str, Responder] = {}
        self._consumers: dict[str, CommandConsumer] = {}

    @classmethod
    async def connect(
        cls,
        bus: InMemoryCommBus,
        url: str = "amqp://guest:guest@localhost:5672/",
        **options: Any,
    ) -> Self:
        """Build, connect and attach to ``bus`` in one call."""
        return await cls(bus, url, **options).start()

    def destination(self, pattern: str, message_type: str) -> str:
        if pattern == "publish":
            return f"{self.topology.events_exchange}/{routing_key(message_type)}"
        if pattern == "send":
            return self.topology.command_queue(message_type)
        if pattern == "query":
            return self.topology.query_queue(message_type)
        return f"{self.prefix}.{pattern}.{routing_key(message_type)}"

    def asyncapi_server(self) -> ServerDescription:
        """The AsyncAPI hook (:mod:`..description`): this broker and virtual host."""
        return rabbitmq_server(self)

    def asyncapi_channel(self, pattern: str, message_type: str) -> ChannelDescription:
        """The AsyncAPI hook: the exchange or queue of a type, with ``amqp`` bindings."""
        return rabbitmq_channel(self, pattern, message_type)

    @property
    def dead_letters(self) -> str:
        """The dead-letter exchange and queue (``{prefix}.dead``)."""
        return f"{self.prefix}.dead"

    async def dead_letter_depth(self) -> int:
        """The dead-letter queue's message count, now (also set as
        ``commbus_dead_letter_messages``)."""
        if not self._connected:
            raise TransportError("the RabbitMQ transport is not connected")
        return await self.topology.dead_letter_depth()

    @property
    def connection(self) -> Any:
        """The aio-pika robust connection (``None`` before :meth:`start`)."""
        return None if self._link is None else self._link.connection

    async def flush(self) -> None:
        """Wait until every event published so far was handed to the client."""
        if self._batcher is not None:
            await self._batcher.flush()
        if self._writer is not None:
            await self._writer.drained()

    # ------------------------------------------------------------------ connection

    async def _connect(self) -> None:
        connection = await open_connection(
            self._url,
            self.url,
            name=self.process_id,
            connect_timeout=self.connect_timeout,
            ssl_context=self._ssl,
        )
        link = self._link = Link(
            connection, self.url, self.logger, self.metrics, lambda: self.closed
        )
        try:
            channels = self._channels = await open_channels(
                connection,
                queries=self.max_concurrency,
                dispatch=self.dispatch_prefetch,
                commands=self.prefetch,
            )
            events = channels["events"]
            self.topology.attach(
                channels["commands"],
                link,
                URL(self._url),
                {"ssl_context": self._ssl} if self._ssl is not None else {},
            )
            self._exchange, self._events_queue = await self.topology.declare(events)
            await self._events_queue.consume(self._on_event, no_ack=True)
            self._requester = Requester(channels["requests"], self.metrics, self.spawn)
            await self._requester.start()
            await self.topology.dead_letter_depth()
        except Exception as exc:
            await link.close()
            why = f"{type(exc).__name__}: {scrub(str(exc))}"
            raise TransportError(f"cannot set up {self.url}: {why}") from None
        self._writer = EventWriter(
            events,
            self.topology.events_exchange,
            seal=self.seal,
            logger=self.logger,
            up=lambda: link.up,
            on_held=self.metrics.buffered,
        )
        if self.batch_events:
            self._batcher = EventBatcher(
                self._writer.send,
                self.codec.encode_batch,
                max_bytes=min(self.codec.max_frame_bytes, _BATCH_BYTES)
                - (TAG_BYTES if self.signer is not None else 0),
                max_frames=_BATCH_FRAMES,
                spawn=self.spawn,
                logger=self.logger,
                on_dropped=self.metrics.dropped,
            )
        self._connected = True
        self.logger.info("rabbitmq_connected", url=self.url, process=self.process_id)

    async def _disconnect(self) -> None:
        if self._link is not None and self._link.up:
            with contextlib.suppress(Exception):  # what was published before close() goes out
                async with asyncio.timeout(5.0):
                    await self.flush()
        if self._writer is not None:
            await self._writer.close()
        for pump in self._pumps.values():
            await pump.close()
        self._pumps.clear()
        if self._link is not None:
            await self._link.close()

    # ------------------------------------------------------------------ outgoing

    def _queue_event(self, message_type: str, data: bytes) -> Awaitable[None] | None:
        link, writer = self._link, self._writer
        if link is None or writer is None or self._closed:
            raise TransportError("the RabbitMQ transport is not connected")
        return outgoing_event(
            writer,
            self._batcher,
            link.up,
            routing_key(message_type),
            data,
            self.buffer_size,
            self.url,
        )

    async def _send_frame(self, message_type: str, data: bytes, message_id: str) -> None:
        if not self._connected or self._closed:
            raise TransportError("the RabbitMQ transport is not connected")
        await self.topology.send(message_type, self.seal(data), message_id)

    async def query(self, ctx: MiddlewareContext, message: Any, timeout: float) -> Any:
        """:meth:`BrokerTransport.query`; a remote dispatch carries its priority."""
        priority = None
        if ctx.message_type.startswith(DISPATCH_PREFIX):
            payload = getattr(message, "payload", None)
            target = payload.get("target") if isinstance(payload, dict) else None
            priority = priority_of(target.get("priority")) if isinstance(target, dict) else None
        token = _PRIORITY.set(priority)
        try:
            return await super().query(ctx, message, timeout)
        finally:
            _PRIORITY.reset(token)

    async def _request(self, message_type: str, data: bytes, corr: str, timeout: float) -> bytes:
        link, requester = self._link, self._requester
        if link is None or requester is None or self._closed:
            raise TransportError("the RabbitMQ transport is not connected")
        if not link.up:
            raise TransportError(f"query {message_type!r} not sent: {self.url} is unreachable")
        try:
            return await requester.request(
                self.topology.query_queue(message_type),
                self.seal(data),
                corr,
                timeout,
                _PRIORITY.get(),
            )
        except TimeoutError:
            raise TimeoutError(f"query {message_type!r} timed out after {timeout}s") from None

    # ------------------------------------------------------------------ consuming

    async def _start_consuming(self, pattern: str, message_type: str) -> None:
        topology = self.topology
        if pattern == "publish":
            key = routing_key(message_type)
            self._pumps[key] = OrderedPump(
                lambda data: self.inbound.handle_event(data, message_type),
                self.spawn,
                self._pump_failed,
                _PENDING,
            )
            await self._events_queue.bind(self._exchange, key)
        elif pattern == "query":
            name = "dispatch" if topology.prioritised(message_type) else "queries"
            channel = self._channels[name]
            queue = await topology.query_queue_of(channel, message_type)
            responder = Responder(
                queue,
                channel,
                lambda body, reply_to: self._answer(body, reply_to, message_type),
                seal=self.seal,
                metrics=self.metrics,
                logger=self.logger,
                spawn=self.spawn,
            )
            self._responders[message_type] = responder
            await responder.start()
        elif pattern == "send":
            consumer = CommandConsumer(
                await topology.command_queue_of(message_type),
                handle=lambda body: self.inbound.handle_command(body, message_type),
                dead_letter=lambda body, reason: topology.dead_letter(body, reason, message_type),
                max_deliveries=self.max_deliveries,
                metrics=self.metrics,
                logger=self.logger,
            )
            self._consumers[message_type] = consumer
            await consumer.start()

    async def _stop_consuming(self, pattern: str, message_type: str) -> None:
        if pattern == "publish":
            key = routing_key(message_type)
            if self._link is not None and self._link.up:
                with contextlib.suppress(Exception):
                    await self._events_queue.unbind(self._exchange, key)
            pump = self._pumps.pop(key, None)
            if pump is not None:
                await pump.close()
        elif pattern == "query":
            responder = self._responders.pop(message_type, None)
            if responder is not None:
                await responder.stop()
        elif pattern == "send":
            consumer = self._consumers.pop(message_type, None)
            if consumer is not None:
                await consumer.stop()

    def _pump_failed(self, exc: BaseException) -> None:
        self.logger.error("event_delivery_failed", error_type=type(exc).__name__, error=str(exc))

    async def _on_event(self, message: Any) -> None:
        pump = self._pumps.get(message.routing_key)
        if pump is None:
            return  # a binding being removed: not (or no longer) subscribed here
        if not pump.offer(message.body):
            self.metrics.dropped()
            self.logger.warning("rabbitmq_slow_consumer", pending=_PENDING)

    async def _answer(
        self, body: bytes, reply_to: str, message_type: str
    ) -> tuple[str | None, bytes | None]:
        if not reply_to:
            self.inbound.reject_unanswerable_query("no reply_to property")
            return None, None
        _, corr, reply = await self.inbound.handle_query(
            body, message_type, has_return_address=True
        )
        return corr, reply
