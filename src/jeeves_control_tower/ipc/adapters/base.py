"""What every broker transport shares; a transport only moves bytes.

:class:`BrokerTransport` implements the bus's :class:`~jeeves_control_tower.ipc.Transport` protocol
once for every broker: it encodes outgoing messages with the :class:`WireCodec`, carrying their
headers (the trace context the telemetry put there) in the frame, decodes what arrives (rejecting
bad frames with a counted reason, never crashing the consumer) and hands it with its headers to the
bus, maps query replies to results or exceptions, and keeps the broker consumption in step with what
is registered on the bus (through :meth:`InMemoryCommBus.add_registration_listener`).

A transport subclass (Redis, NATS, later RabbitMQ) implements only these primitives:

- ``_connect()`` / ``_disconnect()`` (a failed first connect raises at once, it does not
  retry: see the transports);
- ``_publish_frame(type, data)`` (or the hook below), ``_send_frame(type, data, message_id)``,
  ``_request(type, data, corr, timeout) -> bytes`` (raising ``asyncio.TimeoutError`` or
  :class:`NoHandlerError`; it counts the request ``metrics.wire(SENT, "query")`` once the
  broker took it for a responder, and its replies ``metrics.wire(SENT, "reply")``);
- ``_start_consuming(pattern, type)`` / ``_stop_consuming(pattern, type)``, feeding what it
  receives to its inbound side, ``self.inbound`` (:class:`~.inbound.Inbound`):
  ``handle_event``, ``handle_command`` and ``handle_query``, each told the message type
  the destination was consumed for (a frame of another type or pattern is rejected as
  ``wrong_destination``);
- instead of ``_publish_frame``, a transport that can queue an event without waiting
  overrides ``_queue_event(type, data)``, the one hook of :meth:`BrokerTransport.publish`:
  it returns ``None`` once the frame is queued, or an awaitable the publisher waits for
  (back-pressure). Redis queues on its connection, NATS batches (:mod:`.wire.batching`).

``signing_key=`` (optional, shared by every process) signs every frame written and
rejects every frame read without a valid signature (:mod:`.wire.signing`): a subclass
seals what it writes with :meth:`seal`; the inbound side checks what it reads.

Query correlation ids are unguessable (``secrets.token_urlsafe``, 128 bits) and a reply
is accepted only when it carries the id of the query it answers.

Telemetry "settings provider": ``transport.system`` is the ``messaging.system`` value
(``redis``, ``nats``), :meth:`destination` the broker-side name of a destination and
:meth:`broker_settings` all of it (destination, server address and port from the URL,
consumer group) as plain data, so the tracing and metrics middleware can label spans and
series without knowing the broker.
"""

from __future__ import annotations

import abc
import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, Self

from ...logging import ensure_logger
from .. import InMemoryCommBus, MiddlewareContext, get_message_type
from ..middlewares import DedupeMiddleware
from .consumption import Consumption
from .features import BrokerSettings, TransportFeatures, default_process_id, redact_url, server_of
from .inbound import Inbound, InternalCallback
from .metrics import SENT, AdapterMetrics
from .tracecontext import outgoing_headers
from .wire import MessageRegistry, Signer, WireCodec

__all__ = ["BrokerTransport", "TransportFeatures", "default_process_id", "redact_url"]


#: Most (pattern, type) pairs whose telemetry settings a transport keeps built.
_SETTINGS_CACHE = 1024


class BrokerTransport(abc.ABC):
    """Base of the broker transports; see the module docstring for the contract.

    Lifecycle: ``await Transport.connect(bus, url, ...)`` connects, starts consuming what
    the bus has registered, adds the dedupe middleware (``dedupe=True``) and attaches
    itself to the bus; ``await transport.close()`` undoes all of it. Subscriptions and
    handlers registered later are picked up automatically; ``await transport.sync()``
    waits until the broker side caught up with them (a message published by another
    process before that may be missed, as with any late subscriber).
    """

    system: ClassVar[str] = "broker"
    #: The broker's port when the URL names none (``server.port``).
    default_port: ClassVar[int | None] = None
    #: The broker URL, credentials redacted (set by the subclass).
    url: str = ""
    features: ClassVar[TransportFeatures]

    def __init__(
        self,
        bus: InMemoryCommBus,
        *,
        prefix: str = "jeeves",
        registry: MessageRegistry | None = None,
        codec_format: str = "json",
        max_frame_bytes: int = 1 << 20,
        logger: Any = None,
        metrics_registry: Any = None,
        metrics: bool = True,
        dedupe: bool | DedupeMiddleware = True,
        max_concurrency: int = 256,
        max_query_ttl: float | None = None,
        signing_key: bytes | str | None = None,
        process_id: str | None = None,
    ) -> None:
        if not isinstance(bus, InMemoryCommBus):
            raise TypeError(f"bus must be an InMemoryCommBus, got {type(bus).__name__}")
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be an int >= 1, got {max_concurrency!r}")
        if max_query_ttl is not None and not (
            isinstance(max_query_ttl, (int, float)) and 0 < max_query_ttl < float("inf")
        ):
            raise ValueError(f"max_query_ttl must be a number > 0, got {max_query_ttl!r}")
        self.bus = bus
        self.prefix = prefix
        self.process_id = process_id or default_process_id()
        self.metrics = AdapterMetrics(self.system, metrics_registry, enabled=metrics)
        self.codec = WireCodec(
            registry,
            format=codec_format,
            max_frame_bytes=max_frame_bytes,
            on_reject=self.metrics.rejected,
        )
        self.logger = ensure_logger(logger, f"jeeves_control_tower.adapters.{self.system}")
        self.max_concurrency = max_concurrency
        # Frames are signed and checked with it (see .wire.signing); None: no signatures.
        self.signer = None if signing_key is None else Signer(signing_key)
        #: What arrives from the broker: decoded, checked, delivered or answered.
        self.inbound = Inbound(
            bus,
            self.codec,
            self.metrics,
            self.logger,
            system=self.system,
            # The longest a query from the broker runs here (None: the bus's query_timeout).
            max_query_ttl=None if max_query_ttl is None else float(max_query_ttl),
            signer=self.signer,
        )
        self._settings: dict[tuple[str, str], BrokerSettings] = {}
        self.inbound.broker_settings = self.broker_settings
        self._count_published = self.metrics.wire_counter(SENT, "publish")
        if dedupe is True:
            self._dedupe: DedupeMiddleware | None = DedupeMiddleware()
        else:
            self._dedupe = dedupe or None
        #: What the transport consumes on the broker, kept in step with the bus.
        self.consumption = Consumption(
            self._wanted,
            lambda pattern, message_type: self._start_consuming(pattern, message_type),
            lambda pattern, message_type: self._stop_consuming(pattern, message_type),
            self.logger,
        )
        self._unlisten: Callable[[], None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> Self:
        """Connect, consume what the bus has registered, then attach to the bus."""
        if self._started:
            return self
        self._started = True
        await self._connect()
        self._unlisten = self.bus.add_registration_listener(self._registrations_changed)
        await self.refresh()
        if self._dedupe is not None and self._dedupe not in self.bus.middlewares:
            self.bus.add_middleware(self._dedupe)
        self.bus.attach_transport(self)
        return self

    async def close(self) -> None:
        """Detach from the bus, stop consuming, let running handlers finish (briefly),
        and disconnect. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._unlisten is not None:
            self._unlisten()
        if self.bus.transport is self:
            self.bus.detach_transport()
        if self._dedupe is not None:
            self.bus.remove_middleware(self._dedupe)
        self.consumption.close()
        try:
            await self.consumption.stop_all()
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=5.0)
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._disconnect()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def max_query_ttl(self) -> float | None:
        """The longest a query from the broker runs here (``None``: the bus's
        ``query_timeout``); the inbound side applies it."""
        return self.inbound.max_query_ttl

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a tracked task (awaited or cancelled by ``close``)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def destination(self, pattern: str, message_type: str) -> str:
        """The broker-side name (channel, stream, subject) ``pattern`` uses for a type."""
        return f"{self.prefix}{pattern}:{message_type}"

    def consumer_group(self, pattern: str) -> str | None:
        """The consumer group reading ``pattern`` messages, if the broker has one."""
        return None

    def broker_settings(self, pattern: str, message_type: str) -> BrokerSettings:
        """Where ``pattern`` messages of ``message_type`` go on the broker, for telemetry
        (built once per pattern and type: the URL is parsed once, not per message)."""
        key = (pattern, message_type)
        settings = self._settings.get(key)
        if settings is None:
            address, port = server_of(self.url, self.default_port)
            settings = BrokerSettings(
                self.system,
                self.destination(pattern, message_type),
                address,
                port,
                self.consumer_group(pattern),
            )
            if len(self._settings) < _SETTINGS_CACHE:
                self._settings[key] = settings
        return settings

    # ------------------------------------------------------------------ consumption

    def _wanted(self) -> set[tuple[str, str]]:
        want = self.inbound.internal_endpoints()
        bus = self.bus
        for t in bus.get_registered_types():
            if bus.get_subscribers(t):
                want.add(("publish", t))
            if bus.has_handler(t):
                want.add(("send", t))
                want.add(("query", t))
        return want

    async def refresh(self) -> None:
        """Bring broker consumption in line with the bus's registrations (and internal
        endpoints). Runs automatically after each change; await it to be sure."""
        await self.consumption.refresh()

    async def sync(self) -> None:
        """Wait until every registration change so far is reflected on the broker."""
        await self.consumption.sync()

    def _registrations_changed(self) -> None:
        self.consumption.changed()

    # ------------------------------------------------------------------ internal endpoints

    def add_internal_subscriber(self, event_type: str, callback: InternalCallback) -> None:
        """Consume events of ``event_type`` into ``callback`` instead of the bus (for the
        adapters' own traffic, such as service heartbeats)."""
        self.inbound.add_internal("publish", event_type, callback)
        self._registrations_changed()

    def add_internal_handler(self, query_type: str, callback: InternalCallback) -> None:
        """Answer queries of ``query_type`` with ``await callback(message)``."""
        self.inbound.add_internal("query", query_type, callback)
        self._registrations_changed()

    def remove_internal(self, pattern: str, message_type: str) -> None:
        """Stop consuming ``message_type`` for the adapters' own traffic. Events of it that
        arrive before the broker subscription is gone are dropped (not delivered to the
        bus); a query gets the bus's usual answer (no handler)."""
        if self.inbound.remove_internal(pattern, message_type):
            self._registrations_changed()

    async def publish_internal(self, message: Any) -> None:
        """Publish outside the bus's middleware chain."""
        ctx = MiddlewareContext(message, get_message_type(message), pattern="publish")
        ctx.headers = outgoing_headers(self.bus, None)
        await self.publish(ctx, message)

    async def query_internal(self, message: Any, timeout: float) -> Any:
        """Query outside the bus's middleware chain (the bus's telemetry, if any, still
        adds the trace context to its headers)."""
        ctx = MiddlewareContext(message, get_message_type(message), pattern="query")
        ctx.headers = outgoing_headers(self.bus, None)
        return await self.query(ctx, message, timeout)

    # ------------------------------------------------------------------ outgoing (Transport)

    async def publish(self, ctx: MiddlewareContext, message: Any) -> None:
        """Hand an event to the broker; returns once the broker (or, while it is
        unreachable, the bounded reconnect buffer) holds it, or once the transport
        queued it in order for the broker (see :meth:`_queue_event`)."""
        message_type = ctx.message_type
        data = self.codec.encode_event(message, ctx.message_id, message_type, ctx.headers or None)
        pending = self._queue_event(message_type, data)
        if pending is not None:
            await pending
        count = self._count_published
        if count is not None:
            count()

    def _queue_event(self, message_type: str, data: bytes) -> Awaitable[None] | None:
        """Hand one encoded event frame to the broker: ``None`` once it is queued, else
        an awaitable that completes when the broker (or its reconnect buffer) holds it.
        The default waits for :meth:`_publish_frame`; a transport that can queue without
        waiting returns ``None`` and spares the publisher a coroutine."""
        return self._publish_frame(message_type, data)

    async def send(self, ctx: MiddlewareContext, message: Any) -> None:
        """Queue a command durably on the broker (see the transport for buffering)."""
        mid = ctx.message_id
        data = self.codec.encode(
            message, pattern="send", message_id=mid, headers=ctx.headers or None
        )
        await self._send_frame(ctx.message_type, data, mid)
        self.metrics.wire(SENT, "send")

    async def query(self, ctx: MiddlewareContext, message: Any, timeout: float) -> Any:
        """Ask the one handler of the query's type in any process; its result, or
        ``asyncio.TimeoutError``, :class:`NoHandlerError`, :class:`QueryAbortedError`,
        :class:`RemoteError`."""
        corr = self._new_corr()
        data = self.codec.encode(
            message,
            pattern="query",
            message_id=ctx.message_id,
            headers=ctx.headers or None,
            reply_to=self._reply_to(),
            corr=corr,
            ttl=round(timeout, 6),
            ts=round(time.time(), 6),
        )
        raw = await self._request(ctx.message_type, data, corr, timeout)
        return self.inbound.result_of(ctx.message_type, raw, corr)

    def seal(self, data: bytes) -> bytes:
        """``data`` as it goes on the wire: signed when the transport has a key."""
        signer = self.signer
        return data if signer is None else signer.seal(data)

    def _new_corr(self) -> str:
        """An unguessable correlation id (a forged reply must not be able to name it)."""
        return secrets.token_urlsafe(16)

    def _reply_to(self) -> str | None:
        return None

    # ------------------------------------------------------------------ to implement

    @abc.abstractmethod
    async def _connect(self) -> None: ...

    @abc.abstractmethod
    async def _disconnect(self) -> None: ...

    async def _publish_frame(self, message_type: str, data: bytes) -> None:
        """Publish one encoded event frame (unless :meth:`_queue_event` is overridden)."""
        raise NotImplementedError(
            f"{type(self).__name__} implements neither _publish_frame nor _queue_event"
        )

    @abc.abstractmethod
    async def _send_frame(self, message_type: str, data: bytes, message_id: str) -> None: ...

    @abc.abstractmethod
    async def _request(
        self, message_type: str, data: bytes, corr: str, timeout: float
    ) -> bytes: ...

    @abc.abstractmethod
    async def _start_consuming(self, pattern: str, message_type: str) -> None: ...

    @abc.abstractmethod
    async def _stop_consuming(self, pattern: str, message_type: str) -> None: ...
