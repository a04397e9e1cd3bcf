"""NatsTransport: the bus over NATS (``nats://``, ``tls://``, user/password or token).

========  ==========================================  =====================================
pattern   NATS                                        guarantee
========  ==========================================  =====================================
publish   core subject ``{prefix}.evt.{type}``         every process subscribed *now*;
                                                      at-most-once; in order per producer
send      JetStream work-queue stream                 exactly one process; at-least-once;
          ``{prefix}_commands``, pull consumer per    durable (file storage)
          type, explicit ack, redelivery after
          ``ack_wait``, ``Nats-Msg-Id`` dedupe
query     request/reply on ``{prefix}.qry.{type}``,   one process answers (queue group), or
          queue group ``responders``                  NoHandlerError / TimeoutError
========  ==========================================  =====================================

``publish`` returns once the event is queued, in order, for the client's outgoing buffer
(core NATS has no acknowledgement; ``await transport.flush()`` waits for a server round
trip). While connected, the events of one type published in one loop iteration travel as
one batch frame (at most 256 events or 256 KiB; :mod:`..batching`), handed to the client
at the end of that iteration; while reconnecting each event goes to the client's bounded
buffer at once, so a full buffer raises :class:`TransportError` in ``publish``. ``send``
returns once JetStream acknowledged the command (stored); while the server is
unreachable it retries for up to ``send_timeout`` seconds (the same ``Nats-Msg-Id``, so
the stream stores it once), then raises :class:`TransportError`. ``connect`` fails fast: if
the first connection cannot be made (refused, login refused, TLS error, no answer within
``connect_timeout``, 2 s) it raises :class:`TransportError` naming the server (credentials
replaced by ``***``) after one attempt (a refused TCP connection is tried twice). Once
connected, the client reconnects by itself, forever, and buffers outgoing bytes meanwhile
(``buffer_bytes``, default 2 MiB; beyond that a publish raises :class:`TransportError`).
Credentials are never logged.

Events and queries skip nats-py's per-message ``Msg``/queue/task machinery: the client
(:class:`~.client.DirectClient`) hands each event's bytes from its reading task to one
:class:`~..pump.OrderedPump` per type, which decodes and delivers them in order, at most
``_PENDING`` (10,000) frames or 64 MiB waiting; beyond that they are dropped and reported
as a slow consumer, as nats-py does. Each query starts in a task of its own straight from
the reading task (at most ``max_concurrency`` at once, then ``_PENDING`` waiting in order).
JetStream commands use nats-py's ordinary subscriptions.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable
from typing import Any, Self

from ... import InMemoryCommBus, NoHandlerError, TransportError
from ..base import BrokerTransport, TransportFeatures, redact_url
from ..description import ChannelDescription, ServerDescription, default_server
from ..metrics import SENT
from ..pump import OrderedPump
from ..wire import TAG_BYTES, EventBatcher
from .client import DirectClient
from .commands import JetStreamConsumer
from .connection import ConnectionEvents, open_client
from .contract import nats_channel
from .publisher import EventPublisher
from .responder import QueryRunner
from .streams import CommandStreams
from .subjects import token

__all__ = ["NatsTransport"]

_PENDING = 10_000
#: The queue group of the query responders (one of them answers).
_RESPONDERS = "responders"

#: Bounds of an event batch frame (see :mod:`..batching`): small enough that one frame
#: never holds a consumer's pump for long, large enough to amortise a NATS message.
_BATCH_FRAMES = 256
_BATCH_BYTES = 256 << 10


class NatsTransport(BrokerTransport):
    """``transport = await NatsTransport.connect(bus, "nats://localhost:4222")``.

    Options: ``prefix`` (subject namespace, default ``"jeeves"``), ``ack_wait`` (seconds
    before an unacknowledged command is redelivered, default 30), ``max_deliveries``,
    ``prefetch``, ``send_timeout``, ``buffer_bytes``, ``batch_events`` (default ``True``:
    the events of one loop iteration travel as one batch frame; ``False`` sends one NATS
    message per event, for consumers that predate batch frames), ``connect_options``
    (passed to ``nats.connect``: ``user``, ``password``, ``token``, ``tls``...), and those
    of :class:`BrokerTransport`.
    """

    system = "nats"
    default_port = 4222
    features = TransportFeatures("nats")

    def __init__(
        self,
        bus: InMemoryCommBus,
        url: str = "nats://localhost:4222",
        *,
        prefix: str = "jeeves",
        ack_wait: float = 30.0,
        max_deliveries: int = 10,
        prefetch: int = 10,
        send_timeout: float = 30.0,
        buffer_bytes: int = 2 << 20,
        batch_events: bool = True,
        connect_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        if not re.match(r"^[A-Za-z0-9_-]+$", prefix):
            raise ValueError("a NATS prefix is one subject token: letters, digits, '_' or '-'")
        super().__init__(bus, prefix=prefix, **options)
        if ack_wait <= 0 or max_deliveries < 1 or prefetch < 1 or send_timeout <= 0:
            raise ValueError("ack_wait, send_timeout > 0; max_deliveries, prefetch >= 1")
        self._url = url
        self.url = redact_url(url)
        self.ack_wait = float(ack_wait)
        self.max_deliveries = max_deliveries
        self.prefetch = prefetch
        self.send_timeout = float(send_timeout)
        self._buffer_bytes = buffer_bytes
        self.batch_events = bool(batch_events)
        self._connect_options = dict(connect_options or {})
        self.stream = f"{prefix}_commands"
        self.dead_stream = f"{prefix}_dead"
        self._nc: Any = None
        self._events = ConnectionEvents(self.url, self.logger, self.metrics, lambda: self.closed)
        self._streams: CommandStreams | None = None  # made once connected
        self._subs: dict[tuple[str, str], Any] = {}
        self._pumps: dict[str, OrderedPump] = {}
        #: Events out (batched once connected: the batch bound is the server's max payload).
        self.events = EventPublisher(
            lambda message_type: self.destination("publish", message_type), self.signer
        )
        self._consumers: dict[str, JetStreamConsumer] = {}
        #: Answers the queries read from NATS (a task each, ``max_concurrency`` at once).
        self.queries = QueryRunner(
            self._answer,
            self.spawn,
            max_concurrency=self.max_concurrency,
            pending=_PENDING,
            closing=lambda: self._closed,
        )

    @classmethod
    async def connect(
        cls, bus: InMemoryCommBus, url: str = "nats://localhost:4222", **options: Any
    ) -> Self:
        """Build, connect and attach to ``bus`` in one call."""
        return await cls(bus, url, **options).start()

    def destination(self, pattern: str, message_type: str) -> str:
        kind = {"publish": "evt", "send": "cmd", "query": "qry"}.get(pattern, pattern)
        return f"{self.prefix}.{kind}.{token(message_type)}"

    def consumer_group(self, pattern: str) -> str | None:
        return _RESPONDERS if pattern == "query" else None  # queries: one queue group

    def asyncapi_server(self) -> ServerDescription:
        """The AsyncAPI hook (:mod:`..description`): this NATS server."""
        return default_server(self)

    def asyncapi_channel(self, pattern: str, message_type: str) -> ChannelDescription:
        """The AsyncAPI hook: the subject (and stream, queue group) of a type."""
        return nats_channel(self, pattern, message_type, _RESPONDERS)

    @property
    def dead_letters(self) -> str:
        """The dead-letter subject (stored in the ``{prefix}_dead`` stream)."""
        return f"{self.prefix}.dead"

    async def dead_letter_depth(self) -> int:
        """The dead-letter stream's message count, now (also set as
        ``commbus_dead_letter_messages``)."""
        return await self._jetstream().dead_letter_depth()

    def _jetstream(self) -> CommandStreams:
        if self._streams is None:
            raise TransportError("the NATS transport is not connected")
        return self._streams

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until the server has everything published so far."""
        await self.events.flush()
        await self._nc.flush(timeout=timeout)

    def reads_directly(self, message_type: str) -> bool:
        """Whether events of ``message_type`` go from the client's reading task straight
        to their ordered pump (else through nats-py's per-subscription queue and task:
        another nats-py without the hook :mod:`.client` uses)."""
        return message_type in self._pumps

    # ------------------------------------------------------------------ connection

    @property
    def client(self) -> Any:
        """The nats-py client (``None`` before :meth:`start`): for what the transport does
        not wrap, such as ``client.stats``. Publishing through it bypasses the codec."""
        return self._nc

    async def _connect(self) -> None:
        options: dict[str, Any] = {
            "name": self.process_id,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.25,
            "connect_timeout": 2,
            "pending_size": self._buffer_bytes,
            # Every subject the transport uses is built from escaped tokens (subjects.py)
            # and reply subjects come from the server's own MSG lines: nats-py's per-publish
            # regex check of the subject can never fail here.
            "skip_subject_validation": True,
        }
        options.update(self._connect_options)
        client = await open_client(self._url, options, self._events)
        self._nc = client
        self.events.client = client
        if self.batch_events:
            self.events.batcher = EventBatcher(
                self.events.send,
                self.codec.encode_batch,
                max_bytes=min(self.codec.max_frame_bytes, client.max_payload, _BATCH_BYTES)
                - (TAG_BYTES if self.signer is not None else 0),
                max_frames=_BATCH_FRAMES,
                spawn=self.spawn,
                logger=self.logger,
                on_dropped=self.metrics.dropped,
            )
        self._streams = CommandStreams(
            client.jetstream(),
            self._client,
            prefix=self.prefix,
            send_timeout=self.send_timeout,
            metrics=self.metrics,
            logger=self.logger,
        )
        await self._streams.ensure()
        try:
            await self.dead_letter_depth()
        except Exception as exc:  # only a gauge: never a reason not to connect
            self.logger.debug("nats_dead_letter_depth_failed", error_type=type(exc).__name__)
        self.logger.info("nats_connected", url=self.url, process=self.process_id)

    async def _disconnect(self) -> None:
        await self.events.flush()  # what was published before close() goes out
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.close()
            except Exception as exc:  # closing while reconnecting: the socket is gone
                self.logger.debug("nats_close_failed", error_type=type(exc).__name__)

    # ------------------------------------------------------------------ outgoing

    def _client(self) -> Any:
        if self._nc is None or self.closed or self._nc.is_closed:
            raise TransportError("the NATS transport is not connected")
        return self._nc

    def _queue_event(self, message_type: str, data: bytes) -> Awaitable[None] | None:
        """Batch the frame while connected (see :class:`.publisher.EventPublisher`); else
        send it on its own, after what is batched for its subject, so that errors reach
        the publisher."""
        if self._closed:
            raise TransportError("the NATS transport is not connected")
        return self.events.queue(message_type, data)

    async def _send_frame(self, message_type: str, data: bytes, message_id: str) -> None:
        subject = self.destination("send", message_type)
        await self._jetstream().send(subject, self.seal(data), message_id, message_type)

    async def _request(self, message_type: str, data: bytes, corr: str, timeout: float) -> bytes:
        import nats.errors

        subject = self.destination("query", message_type)
        client = self._client()
        if not client.is_connected:  # fail fast, as while Redis is down
            raise TransportError(f"query {message_type!r} not sent: {self.url} is unreachable")
        try:
            raw: bytes = await client.request_direct(subject, self.seal(data), timeout)
        except nats.errors.NoRespondersError:
            raise NoHandlerError(
                f"no process handles query type {message_type!r} on {self.url}"
            ) from None
        except nats.errors.TimeoutError:
            self.metrics.wire(SENT, "query")  # a responder got it and did not answer in time
            raise TimeoutError(f"query {message_type!r} timed out after {timeout}s") from None
        except nats.errors.Error as exc:
            raise TransportError(f"query {message_type!r} not sent: {type(exc).__name__}") from None
        self.metrics.wire(SENT, "query")
        return raw

    # ------------------------------------------------------------------ consuming

    async def _start_consuming(self, pattern: str, message_type: str) -> None:
        nc = self._client()
        subject = self.destination(pattern, message_type)
        # A subscriber that falls behind by more than _PENDING messages loses the excess
        # (nats-py reports a slow consumer, logged): memory stays bounded.
        if pattern == "publish":
            sub = await nc.subscribe(
                subject,
                cb=functools.partial(self._on_event, message_type),
                pending_msgs_limit=_PENDING,
            )
            self._subs[(pattern, message_type)] = sub
            # Events go straight from the reading task to one ordered worker per type
            # (the same bound, _PENDING, beyond which they are dropped and reported).
            pump = OrderedPump(
                lambda data: self.inbound.handle_event(data, message_type),
                self.spawn,
                self._pump_failed,
                _PENDING,
            )
            if isinstance(nc, DirectClient) and nc.route(sub, pump.offer):
                self._pumps[message_type] = pump
        elif pattern == "query":
            sub = await nc.subscribe(
                subject,
                queue=_RESPONDERS,
                cb=functools.partial(self._on_query, message_type),
                pending_msgs_limit=_PENDING,
            )
            self._subs[(pattern, message_type)] = sub
            if isinstance(nc, DirectClient):  # straight from the reading task, as events
                nc.route_with_reply(
                    sub, lambda data, reply: self._offer_query(data, reply, message_type)
                )
        elif pattern == "send":
            streams = self._jetstream()
            consumer = JetStreamConsumer(
                streams.js,
                stream=self.stream,
                subject=subject,
                durable=f"cmd_{token(message_type)}",
                handle=lambda data: self.inbound.handle_command(data, message_type),
                dead_letter=lambda data, reason: streams.dead_letter(data, reason, message_type),
                prefetch=self.prefetch,
                ack_wait=self.ack_wait,
                max_deliveries=self.max_deliveries,
                metrics=self.metrics,
                logger=self.logger,
                begin_batch=functools.partial(self.inbound.begin_batch, "send", message_type),
            )
            self._consumers[message_type] = consumer
            consumer.start()
        if nc.is_connected:
            await nc.flush(timeout=5)  # the server has registered the interest

    async def _stop_consuming(self, pattern: str, message_type: str) -> None:
        sub = self._subs.pop((pattern, message_type), None)
        pump = self._pumps.pop(message_type, None) if pattern == "publish" else None
        if sub is not None and isinstance(self._nc, DirectClient):
            self._nc.unroute(sub)
        if pump is not None:
            await pump.close()
        if sub is not None and self._nc is not None and not self._nc.is_closed:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                self.logger.debug("nats_unsubscribe_failed", error_type=type(exc).__name__)
        consumer = self._consumers.pop(message_type, None) if pattern == "send" else None
        if consumer is not None:
            await consumer.stop()

    def _pump_failed(self, exc: BaseException) -> None:
        self.logger.error("event_delivery_failed", error_type=type(exc).__name__, error=str(exc))

    async def _on_event(self, message_type: str, msg: Any) -> None:
        """The callback of an event subscription when the direct path is not in use."""
        await self.inbound.handle_event(msg.data, message_type)

    async def _on_query(self, message_type: str, msg: Any) -> None:
        """The callback of a query subscription when the direct path is not in use."""
        if not self._offer_query(msg.data, msg.reply, message_type):
            self.logger.warning("nats_query_dropped", reason="backlog full", pending=_PENDING)

    def _offer_query(self, data: bytes, reply: str, message_type: str) -> bool:
        """Hand a query to :attr:`queries`; ``False`` when its backlog is full. A query
        without a reply subject is rejected at once (``no_reply_to``): its answer could
        not be sent, so its handler never runs."""
        if not reply:
            self.inbound.reject_unanswerable_query("no reply subject")
            return True
        return self.queries.offer(data, reply, message_type)

    async def _answer(self, data: bytes, reply_to: str, message_type: str) -> None:
        try:
            _, corr, reply = await self.inbound.handle_query(
                data, message_type, has_return_address=bool(reply_to)
            )
            if reply is not None and reply_to:
                client = self._client()
                sealed = self.seal(reply)
                if len(sealed) > client.max_payload:  # the server would refuse it: say so
                    too_big = TransportError(
                        f"the reply ({len(sealed)} bytes) is over the NATS server's"
                        f" max_payload ({client.max_payload} bytes)"
                    )
                    sealed = self.seal(self.codec.encode_reply(corr, kind="error", error=too_big))
                await client.publish_now(reply_to, sealed)
                self.metrics.wire(SENT, "reply")
        except Exception as exc:
            self.logger.warning("nats_reply_failed", error_type=type(exc).__name__)
