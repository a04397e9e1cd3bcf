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

import asyncio
import contextlib
import functools
import re
from collections import deque
from collections.abc import Awaitable
from typing import Any, NoReturn, Self

from ... import InMemoryCommBus, NoHandlerError, TransportError
from ..base import BrokerTransport, TransportFeatures, redact_url
from ..metrics import SENT
from ..pump import OrderedPump
from ..wire import TAG_BYTES, EventBatcher
from .client import DirectClient
from .commands import JetStreamConsumer
from .subjects import token

__all__ = ["NatsTransport"]

#: How long one JetStream publish waits for its acknowledgement before it is sent again
#: (same ``Nats-Msg-Id``: the server drops the duplicate). Short, because a send written
#: into a socket whose server just died is never acknowledged: the retry after a
#: reconnect must not wait long for it.
_SEND_ATTEMPT_TIMEOUT = 1.0

_PENDING = 10_000

#: Bounds of an event batch frame (see :mod:`..batching`): small enough that one frame
#: never holds a consumer's pump for long, large enough to amortise a NATS message.
_BATCH_FRAMES = 256
_BATCH_BYTES = 256 << 10
_CREDENTIALS = re.compile(r"//[^/@\s]*@")


def _scrub(text: str) -> str:
    return _CREDENTIALS.sub("//***@", text)


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
        self._last_error: Exception | None = None
        self._js: Any = None
        self._subs: dict[tuple[str, str], Any] = {}
        self._pumps: dict[str, OrderedPump] = {}
        self._subjects: dict[str, str] = {}  # event type -> subject (publish hot path)
        self._batcher: EventBatcher | None = None  # made once connected (server's max payload)
        self._consumers: dict[str, JetStreamConsumer] = {}
        self._queries_running = 0
        self._query_backlog: deque[tuple[bytes, str, str]] = deque()

    @classmethod
    async def connect(
        cls, bus: InMemoryCommBus, url: str = "nats://localhost:4222", **options: Any
    ) -> Self:
        """Build, connect and attach to ``bus`` in one call."""
        return await cls(bus, url, **options).start()

    def destination(self, pattern: str, message_type: str) -> str:
        kind = {"publish": "evt", "send": "cmd", "query": "qry"}.get(pattern, pattern)
        return f"{self.prefix}.{kind}.{token(message_type)}"

    @property
    def dead_letters(self) -> str:
        """The dead-letter subject (stored in the ``{prefix}_dead`` stream)."""
        return f"{self.prefix}.dead"

    async def dead_letter_depth(self) -> int:
        """The dead-letter stream's message count, now (also set as
        ``commbus_dead_letter_messages``)."""
        info = await self._js.stream_info(self.dead_stream)
        depth = int(info.state.messages)
        self.metrics.dead_letter_depth(self.dead_stream, depth)
        return depth

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until the server has everything published so far."""
        if self._batcher is not None:
            await self._batcher.flush()
        await self._nc.flush(timeout=timeout)

    # ------------------------------------------------------------------ connection

    async def _connect(self) -> None:
        from .client import DirectClient

        options: dict[str, Any] = {
            "name": self.process_id,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.25,
            "connect_timeout": 2,
            "pending_size": self._buffer_bytes,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            # Every subject the transport uses is built from escaped tokens (subjects.py)
            # and reply subjects come from the server's own MSG lines: nats-py's per-publish
            # regex check of the subject can never fail here.
            "skip_subject_validation": True,
        }
        options.update(self._connect_options)
        # nats-py treats a failed *first* connect like a lost connection: with reconnects
        # allowed it retries a refused login, an unverifiable certificate or a dead
        # address forever. The first connect is therefore made with reconnects off and
        # one retry at most (nats-py's server pool needs max_reconnect_attempts >= 1 to
        # ever give up on a refused TCP connection); the caller's reconnect policy is
        # restored once connected, so a broker restart later is survived as before.
        policy = {k: options[k] for k in ("allow_reconnect", "max_reconnect_attempts")}
        options["allow_reconnect"] = False
        options["max_reconnect_attempts"] = 1
        connect_timeout = float(options.get("connect_timeout") or 2)
        # Each step of nats-py's handshake is bounded by connect_timeout; this bounds the
        # whole of it (TCP twice, INFO, TLS, CONNECT/PONG) so connect always returns.
        deadline = 4 * connect_timeout + float(options.get("reconnect_time_wait") or 0) + 1
        self._last_error = None
        client = DirectClient()
        try:
            await asyncio.wait_for(client.connect(servers=[self._url], **options), deadline)
        except Exception as exc:
            with contextlib.suppress(Exception):  # a failed connect may hold a socket
                # bounded: after a failed TLS handshake nats-py's close() never returns
                await asyncio.wait_for(client.close(), timeout=1.0)
            raise TransportError(f"cannot connect to {self.url}: {self._why(exc)}") from None
        client.options.update(policy)  # from now on: reconnect as configured
        self._nc = client
        if self.batch_events:
            self._batcher = EventBatcher(
                self._send_event,
                self.codec.encode_batch,
                max_bytes=min(self.codec.max_frame_bytes, client.max_payload, _BATCH_BYTES)
                - (TAG_BYTES if self.signer is not None else 0),
                max_frames=_BATCH_FRAMES,
                spawn=self.spawn,
                logger=self.logger,
                on_dropped=self.metrics.dropped,
            )
        self._js = client.jetstream()
        await self._ensure_streams()
        try:
            await self.dead_letter_depth()
        except Exception as exc:  # only a gauge: never a reason not to connect
            self.logger.debug("nats_dead_letter_depth_failed", error_type=type(exc).__name__)
        self.logger.info("nats_connected", url=self.url, process=self.process_id)

    async def _ensure_streams(self) -> None:
        from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType
        from nats.js.errors import BadRequestError

        for name, subjects, extra in (
            (self.stream, [f"{self.prefix}.cmd.>"], {"retention": RetentionPolicy.WORK_QUEUE}),
            (self.dead_stream, [self.dead_letters], {"max_msgs": 10_000}),
        ):
            try:
                await self._js.add_stream(
                    name=name,
                    subjects=subjects,
                    storage=StorageType.FILE,
                    discard=DiscardPolicy.OLD,
                    **extra,
                )
            except BadRequestError:
                await self._js.stream_info(name)  # exists with another config: use it

    async def _disconnect(self) -> None:
        if self._batcher is not None:
            await self._batcher.flush()  # what was published before close() goes out
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.close()
            except Exception as exc:  # closing while reconnecting: the socket is gone
                self.logger.debug("nats_close_failed", error_type=type(exc).__name__)

    def _why(self, exc: BaseException) -> str:
        """What made the first connect fail, credentials scrubbed. nats-py reports a
        server that refused every TCP attempt as ``NoServersError``; the error behind it
        (passed to the error callback) is the useful one."""
        import nats.errors

        if isinstance(exc, TimeoutError):
            return f"no answer within the connect timeout (TimeoutError: {_scrub(str(exc))})"
        if isinstance(exc, nats.errors.NoServersError) and self._last_error is not None:
            exc = self._last_error
        return f"{type(exc).__name__}: {_scrub(str(exc))}"

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        self.logger.warning("nats_error", error_type=type(exc).__name__, error=_scrub(str(exc)))

    async def _on_disconnected(self) -> None:
        if not self.closed and self._nc is not None:  # not a failed first connect
            self.logger.warning("nats_disconnected", url=self.url)

    async def _on_reconnected(self) -> None:
        self.metrics.reconnected()
        self.logger.info("nats_reconnected", url=self.url)

    # ------------------------------------------------------------------ outgoing

    def _client(self) -> Any:
        if self._nc is None or self.closed or self._nc.is_closed:
            raise TransportError("the NATS transport is not connected")
        return self._nc

    def _queue_event(self, message_type: str, data: bytes) -> Awaitable[None] | None:
        """Batch the frame while connected (see :mod:`..batching`); else send it on its own,
        after what is batched for its subject, so that errors reach the publisher."""
        subject = self._subjects.get(message_type)
        if subject is None:
            subject = self._subjects[message_type] = self.destination("publish", message_type)
        nc = self._nc
        if nc is None or self._closed:
            raise TransportError("the NATS transport is not connected")
        batcher = self._batcher
        if batcher is not None and nc.is_connected:
            pending = batcher.add(subject, data)
            if pending is not False:
                return pending
        return self._send_alone(subject, data)

    async def _send_alone(self, subject: str, data: bytes) -> None:
        if self._batcher is not None:
            pending = self._batcher.take(subject)
            if pending is not None:
                await pending
        await self._send_event((subject, data))

    async def _send_event(self, item: tuple[str, bytes]) -> None:
        """Hand one frame (an event or a batch of events) to nats-py."""
        nc = self._nc
        signer = self.signer
        if signer is not None:
            item = (item[0], signer.seal(item[1]))
        try:
            await nc.publish(*item)
        except Exception as exc:
            self._publish_failed(nc, exc)

    def _publish_failed(self, nc: Any, exc: Exception) -> NoReturn:
        import nats.errors

        if nc is None or nc.is_closed:
            raise TransportError("the NATS transport is not connected") from None
        if isinstance(exc, nats.errors.Error):
            raise TransportError(f"publish not accepted: {type(exc).__name__}") from None
        raise exc

    async def _send_frame(self, message_type: str, data: bytes, message_id: str) -> None:
        import nats.errors

        subject = self.destination("send", message_type)
        data = self.seal(data)
        headers = {"Nats-Msg-Id": message_id}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.send_timeout
        backoff = 0.05
        while True:
            client = self._client()
            remaining = deadline - loop.time()
            try:
                await self._js.publish(
                    subject,
                    data,
                    headers=headers,
                    timeout=max(0.05, min(_SEND_ATTEMPT_TIMEOUT, remaining)),
                )
                return
            except nats.errors.NoRespondersError:
                if client.is_connected:  # no stream listening: the server lost it
                    await self._recreate_streams()
            except (nats.errors.TimeoutError, nats.errors.ConnectionReconnectingError):
                pass
            except nats.errors.Error as exc:
                raise TransportError(f"send not accepted: {type(exc).__name__}") from None
            if loop.time() + backoff >= deadline:
                raise TransportError(
                    f"send {message_type!r}: JetStream did not acknowledge within"
                    f" {self.send_timeout}s (server unreachable?); not sent"
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def _recreate_streams(self) -> None:
        try:
            await self._ensure_streams()
        except Exception as exc:
            self.logger.debug("nats_stream_recreate_failed", error_type=type(exc).__name__)

    async def _request(self, message_type: str, data: bytes, corr: str, timeout: float) -> bytes:
        import nats.errors

        subject = self.destination("query", message_type)
        client = self._client()
        if not client.is_connected:  # fail fast, as while Redis is down
            raise TransportError(f"query {message_type!r} not sent: {self.url} is unreachable")
        try:
            msg = await client.request(subject, self.seal(data), timeout=timeout)
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
        data_out: bytes = msg.data
        return data_out

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
                queue="responders",
                cb=functools.partial(self._on_query, message_type),
                pending_msgs_limit=_PENDING,
            )
            self._subs[(pattern, message_type)] = sub
            if isinstance(nc, DirectClient):  # straight from the reading task, as events
                nc.route_with_reply(
                    sub, lambda data, reply: self._offer_query(data, reply, message_type)
                )
        elif pattern == "send":
            consumer = JetStreamConsumer(
                self._js,
                stream=self.stream,
                subject=subject,
                durable=f"cmd_{token(message_type)}",
                handle=lambda data: self.inbound.handle_command(data, message_type),
                dead_letter=lambda data, reason: self._dead_letter(data, reason, message_type),
                prefetch=self.prefetch,
                ack_wait=self.ack_wait,
                max_deliveries=self.max_deliveries,
                metrics=self.metrics,
                logger=self.logger,
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
        """Answer a query in a task of its own (queries are answered concurrently, and a
        handler's ``asyncio.timeout`` binds to the task that runs it): at most
        ``max_concurrency`` at once, then up to ``_PENDING`` wait in arrival order;
        beyond that ``False`` (dropped, reported as a slow consumer)."""
        if self._queries_running < self.max_concurrency:
            self._queries_running += 1
            self.spawn(self._answer(data, reply, message_type))
            return True
        if len(self._query_backlog) >= _PENDING:
            return False
        self._query_backlog.append((data, reply, message_type))
        return True

    async def _answer(self, data: bytes, reply_to: str, message_type: str) -> None:
        try:
            _, _, reply = await self.inbound.handle_query(
                data, message_type, has_return_address=bool(reply_to)
            )
            if reply is not None and reply_to:
                await self._client().publish(reply_to, self.seal(reply))
                self.metrics.wire(SENT, "reply")
        except Exception as exc:
            self.logger.warning("nats_reply_failed", error_type=type(exc).__name__)
        finally:
            if self._query_backlog and not self._closed:
                self.spawn(self._answer(*self._query_backlog.popleft()))
            else:
                self._queries_running -= 1

    async def _dead_letter(self, data: bytes, reason: str, message_type: str) -> None:
        try:
            await self._js.publish(self.dead_letters, data, headers={"Jeeves-Reason": reason})
            self.metrics.dead_lettered(message_type, reason)
            await self.dead_letter_depth()
        except Exception as exc:
            self.logger.error("nats_dead_letter_failed", error_type=type(exc).__name__)
