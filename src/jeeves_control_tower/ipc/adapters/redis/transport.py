"""RedisTransport: the bus over Redis (``redis://``, ``rediss://``, passwords).

========  ==========================================  =====================================
pattern   Redis                                       guarantee
========  ==========================================  =====================================
publish   ``PUBLISH {prefix}evt:{type}``              every process subscribed *now*;
                                                      at-most-once; in order per producer
send      ``XADD {prefix}cmd:{type}``, group          exactly one process; at-least-once;
          ``handlers``, XACK/XDEL, XAUTOCLAIM         durable as Redis persistence is
query     script (NUMSUB + LPUSH ``{prefix}qry:``),   one process answers, or
          BRPOP, reply on ``{prefix}rep:{process}.    NoHandlerError / TimeoutError
          {random}``
========  ==========================================  =====================================

``publish`` and ``send`` return once Redis executed the command (they share ordered,
automatically pipelined writes). Reconnection is automatic on every connection; while
Redis is unreachable, publishes and sends are buffered (``buffer_size``, default 10,000)
and written on reconnect, or raise :class:`TransportError` when the buffer is full or
``buffer_size=0``. Queries fail at once with :class:`TransportError` while Redis is down.
Credentials in the URL (or ``password=``) are used, never logged. ``connect`` fails fast:
a refused connection (tried twice), a refused password, a TLS error or no answer within
``socket_timeout`` raises :class:`TransportError` naming the server without credentials.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import secrets
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any, Self

from redis.exceptions import NoScriptError

from ... import InMemoryCommBus, NoHandlerError, TransportError
from ..base import BrokerTransport, TransportFeatures, redact_url
from ..description import ChannelDescription, ServerDescription, default_server
from ..metrics import SENT
from ..pump import OrderedPump
from .conn import UNREACHABLE
from .contract import redis_channel
from .mux import MuxConnection
from .pubsub import PubSubReader
from .queries import REQUEST_SCRIPT, QueryResponder
from .streams import GROUP, StreamConsumer

__all__ = ["RedisTransport"]

#: Room for a Pub/Sub message's framing and channel name (and a reply's correlation id)
#: beyond ``max_frame_bytes``: a longer message is dropped unread (see ``.pubsub``).
_PUBSUB_OVERHEAD = 1 << 16


class RedisTransport(BrokerTransport):
    """``transport = await RedisTransport.connect(bus, "redis://localhost:6379/0")``.

    Options: ``prefix`` (key and channel namespace, default ``"jeeves:"``), ``password``,
    ``buffer_size``, ``prefetch`` (commands read per batch), ``min_idle`` (seconds before a
    dead consumer's command is reclaimed, default 30), ``max_deliveries`` (then
    dead-lettered), ``socket_timeout``, ``client_options`` (passed to
    ``redis.asyncio.from_url``), and those of :class:`BrokerTransport`.
    """

    system = "redis"
    default_port = 6379
    features = TransportFeatures("redis")

    def __init__(
        self,
        bus: InMemoryCommBus,
        url: str = "redis://localhost:6379/0",
        *,
        prefix: str = "jeeves:",
        password: str | None = None,
        buffer_size: int = 10_000,
        prefetch: int = 10,
        min_idle: float = 30.0,
        max_deliveries: int = 10,
        socket_timeout: float = 5.0,
        client_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(bus, prefix=prefix, **options)
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("url must start with redis://, rediss:// or unix://")
        if prefetch < 1 or min_idle <= 0 or max_deliveries < 1:
            raise ValueError("prefetch >= 1, min_idle > 0 and max_deliveries >= 1 are required")
        self._url = url
        self.url = redact_url(url)
        self._password = password
        self.buffer_size = buffer_size
        self.prefetch = prefetch
        self.min_idle = float(min_idle)
        self.max_deliveries = max_deliveries
        self._socket_timeout = socket_timeout
        self._client_options = dict(client_options or {})
        # Unguessable, like the correlation ids: a client that cannot list channels
        # cannot aim a reply at it.
        self._reply_channel = f"{prefix}rep:{self.process_id}.{secrets.token_urlsafe(16)}"
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._pumps: dict[str, OrderedPump] = {}
        self._streams: dict[str, StreamConsumer] = {}
        self._responders: dict[str, QueryResponder] = {}
        self._client: Any = None
        self._blocking: Any = None
        self._writer: MuxConnection | None = None
        self._reader: PubSubReader | None = None
        self._query_slots = asyncio.Semaphore(self.max_concurrency)

    @classmethod
    async def connect(
        cls, bus: InMemoryCommBus, url: str = "redis://localhost:6379/0", **options: Any
    ) -> Self:
        """Build, connect and attach to ``bus`` in one call."""
        return await cls(bus, url, **options).start()

    def destination(self, pattern: str, message_type: str) -> str:
        kind = {"publish": "evt", "send": "cmd", "query": "qry"}.get(pattern, pattern)
        return f"{self.prefix}{kind}:{message_type}"

    def consumer_group(self, pattern: str) -> str | None:
        return GROUP if pattern == "send" else None  # commands: one stream group

    def asyncapi_server(self) -> ServerDescription:
        """The AsyncAPI hook (:mod:`..description`): this Redis server."""
        described = default_server(self)
        db = self.url.split("://", 1)[-1].partition("/")[2].split("?", 1)[0]
        return replace(described, pathname=f"/{db}" if db else None)

    def asyncapi_channel(self, pattern: str, message_type: str) -> ChannelDescription:
        """The AsyncAPI hook: the Pub/Sub channel, stream or query list of a type."""
        return redis_channel(self, pattern, message_type)

    @property
    def dead_letters(self) -> str:
        """The dead-letter stream: rejected frames and commands delivered too often."""
        return f"{self.prefix}dead"

    async def dead_letter_depth(self) -> int:
        """The dead-letter stream's length, now (also set as
        ``commbus_dead_letter_messages``)."""
        depth = int(await self._client.xlen(self.dead_letters))
        self.metrics.dead_letter_depth(self.dead_letters, depth)
        return depth

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every publish/send so far reached Redis (buffered ones included)."""
        if self._writer is not None:
            await self._writer.flush(timeout)

    # ------------------------------------------------------------------ connection

    async def _connect(self) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        opts: dict[str, Any] = {
            "socket_connect_timeout": self._socket_timeout,
            "socket_keepalive": True,
            "retry": Retry(NoBackoff(), 1),
            "decode_responses": False,
            "protocol": 2,  # the pub/sub reader and raw replies speak RESP2
        }
        if self._password is not None:
            opts["password"] = self._password
        opts.update(self._client_options)
        self._client = aioredis.from_url(self._url, socket_timeout=self._socket_timeout, **opts)
        self._blocking = aioredis.from_url(self._url, socket_timeout=None, **opts)
        try:
            await self._client.ping()
        except Exception as exc:
            await self._close_clients()
            raise TransportError(
                f"cannot connect to {self.url}: {type(exc).__name__}: {exc}"
            ) from None
        self._writer = MuxConnection(
            self._blocking, buffer_size=self.buffer_size, metrics=self.metrics, logger=self.logger
        )
        try:
            await self._writer.start()
        except Exception as exc:
            await self._close_clients()
            raise TransportError(f"cannot connect to {self.url}: {type(exc).__name__}") from None
        self._reader = PubSubReader(
            self._blocking,
            logger=self.logger,
            metrics=self.metrics,
            max_reply=self.codec.max_frame_bytes + _PUBSUB_OVERHEAD,
        )
        await self._reader.start()
        await self._reader.subscribe(self._reply_channel, self._on_reply)
        try:
            await self.dead_letter_depth()
        except Exception as exc:  # only a gauge: never a reason not to connect
            self.logger.debug("redis_dead_letter_depth_failed", error_type=type(exc).__name__)
        self.logger.info("redis_connected", url=self.url, process=self.process_id)

    async def _disconnect(self) -> None:
        if self._writer is not None:
            await self._writer.close()
        if self._reader is not None:
            await self._reader.close()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(TransportError("transport closed"))
        await self._close_clients()

    async def _close_clients(self) -> None:
        for client in (self._client, self._blocking):
            if client is not None:
                await client.aclose()

    # ------------------------------------------------------------------ outgoing

    def _writer_or_fail(self) -> MuxConnection:
        if self._writer is None or self.closed:
            raise TransportError("the Redis transport is not connected")
        return self._writer

    def _queue_event(self, message_type: str, data: bytes) -> Awaitable[None] | None:
        # Pub/Sub is at-most-once whatever we wait for, so a publish is queued in order on
        # the connection and not awaited (as with NATS); a backlog makes publishers wait.
        writer = self._writer_or_fail()
        if self.signer is not None:
            data = self.signer.seal(data)
        writer.submit_nowait("PUBLISH", self.destination("publish", message_type), data)
        return writer.writable() if writer.backlogged else None

    async def _send_frame(self, message_type: str, data: bytes, message_id: str) -> None:
        await self._writer_or_fail().submit(
            "XADD", self.destination("send", message_type), "*", "f", self.seal(data)
        )

    def _reply_to(self) -> str | None:
        return self._reply_channel

    async def _request(self, message_type: str, data: bytes, corr: str, timeout: float) -> bytes:
        writer = self._writer_or_fail()
        key = self.destination("query", message_type)
        data = self.seal(data)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[corr] = future
        try:
            async with asyncio.timeout(timeout):
                try:
                    found = await _run_script(writer, key, data, int(timeout * 1000) + 1000)
                except UNREACHABLE as exc:
                    raise TransportError(
                        f"query {message_type!r} not sent: redis unreachable ({type(exc).__name__})"
                    ) from None
                if not found:
                    raise NoHandlerError(
                        f"no process handles query type {message_type!r} on {self.url}"
                    )
                self.metrics.wire(SENT, "query")  # queued for a responder
                return await future
        finally:
            self._pending.pop(corr, None)

    def _on_reply(self, data: bytes) -> None:
        """A reply on this process's reply channel (the only channel routed here), for the
        pending query whose unguessable corr it starts with; anything else is dropped."""
        corr, _, frame = data.partition(b" ")
        future = self._pending.get(corr.decode("ascii", "replace"))
        if future is not None and not future.done():
            future.set_result(frame)

    # ------------------------------------------------------------------ consuming

    async def _start_consuming(self, pattern: str, message_type: str) -> None:
        assert self._reader is not None and self._writer is not None
        dest = self.destination(pattern, message_type)
        if pattern == "publish":
            pump = OrderedPump(
                lambda data: self.inbound.handle_event(data, message_type),
                self.spawn,
                self._pump_failed,
            )
            self._pumps[message_type] = pump
            await self._reader.subscribe(dest, pump.push)
        elif pattern == "send":
            consumer = StreamConsumer(
                self._blocking,
                self._writer,
                dest,
                self.process_id,
                lambda data: self.inbound.handle_command(data, message_type),
                message_type=message_type,
                dead_letters=self.dead_letters,
                prefetch=self.prefetch,
                min_idle=self.min_idle,
                max_deliveries=self.max_deliveries,
                metrics=self.metrics,
                logger=self.logger,
                begin_batch=functools.partial(self.inbound.begin_batch, "send", message_type),
            )
            self._streams[message_type] = consumer
            consumer.start()
        elif pattern == "query":
            responder = QueryResponder(
                self._blocking,
                dest,
                lambda data: self._answer(data, message_type),
                self._query_slots,
                self.spawn,
                self.logger,
            )
            self._responders[message_type] = responder
            responder.start()
            await self._reader.subscribe(dest, _presence_only)  # counted by NUMSUB

    async def _stop_consuming(self, pattern: str, message_type: str) -> None:
        dest = self.destination(pattern, message_type)
        if pattern == "publish":
            if self._reader is not None:
                await self._reader.unsubscribe(dest)
            pump = self._pumps.pop(message_type, None)
            if pump is not None:
                await pump.close()
        elif pattern == "send":
            consumer = self._streams.pop(message_type, None)
            if consumer is not None:
                await consumer.stop()
        elif pattern == "query":
            if self._reader is not None:
                await self._reader.unsubscribe(dest)
            responder = self._responders.pop(message_type, None)
            if responder is not None:
                await responder.stop()

    async def _answer(self, data: bytes, message_type: str) -> None:
        reply_to, corr, reply = await self.inbound.handle_query(
            data, message_type, reply_prefix=f"{self.prefix}rep:"
        )
        if reply is None or reply_to is None:
            return  # handle_query answers only a reply_to inside the namespace
        try:
            self._writer_or_fail().submit_nowait(
                "PUBLISH", reply_to, (corr or "").encode() + b" " + self.seal(reply)
            )
            self.metrics.wire(SENT, "reply")
        except TransportError as exc:
            self.logger.warning("redis_reply_failed", error=str(exc))

    def _pump_failed(self, exc: BaseException) -> None:
        self.logger.error("event_delivery_failed", error_type=type(exc).__name__, error=str(exc))


_SCRIPT_SHA = hashlib.sha1(REQUEST_SCRIPT.encode()).hexdigest()


async def _run_script(writer: MuxConnection, key: str, data: bytes, ttl_ms: int) -> Any:
    args = (2, key, key, data, ttl_ms)
    try:
        return await writer.submit("EVALSHA", _SCRIPT_SHA, *args, bufferable=False)
    except NoScriptError:  # a new or restarted server: send the script itself once
        return await writer.submit("EVAL", REQUEST_SCRIPT, *args, bufferable=False)


def _presence_only(data: bytes) -> None:
    """Nothing is ever published on a presence channel; subscribing is the point."""
