"""GrpcTransport: a bus joined to a control-tower hub (:mod:`.hub`) over one gRPC stream.

========  ===============================================  ================================
pattern   through the hub                                  guarantee
========  ===============================================  ================================
publish   to every process consuming the type now (and     at-most-once; in order per
          the hub's own bus)                               producer
send      to exactly one process consuming the type;       exactly one handler at a time;
          held by the hub until one has room, routed       redelivered when its process
          again if its process goes away unanswered       goes away; lost if the hub dies
query     to one process answering the type                NoHandlerError / TimeoutError
dispatch  :meth:`GrpcTransport.dispatch` through the hub's coordinator (see :mod:`.hubservices`)
========  ===============================================  ================================

``publish`` returns once the event is queued, in order, on the stream's outbox (the events
of one loop iteration travel as one batch frame, as over NATS); while the hub is
unreachable the outbox holds at most ``buffer_messages`` events, beyond which ``publish``
raises :class:`TransportError`. ``send`` returns once the hub holds the command; while the
hub is unreachable it waits for the stream to come back for up to ``send_timeout``
seconds, then raises :class:`TransportError`. ``connect`` fails fast (see
:class:`~.link.HubLink`); once connected the stream is reopened by itself and every
subscription and service is registered again.

``target`` is the hub's ``HOST:PORT`` or any target gRPC resolves (``dns:///HOST:PORT``,
``unix:///PATH``, ...), or ``grpc://HOST:PORT`` (``grpcs://HOST:PORT``: TLS with the
system's roots unless ``tls`` says otherwise); another transport's URL (``redis://``,
``amqp://``, ``http://``, ...) is a ``ValueError``. Options: ``token`` (bearer token the
hub requires), ``tls`` (``True`` for the system's roots, or the PEM bytes of the CA to
trust), ``connect_timeout`` (2 s),
``buffer_messages`` (10,000), ``send_timeout`` (30 s), ``batch_events`` (``True``),
``channel_options`` (extra ``grpc.aio`` channel options), and those of
:class:`BrokerTransport`. The largest frame is
the codec's ``max_frame_bytes``; the channel refuses gRPC messages beyond it plus 64 KiB.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any, Self

from ... import InMemoryCommBus, TransportError
from ..base import BrokerTransport, TransportFeatures
from ..description import ChannelDescription, ServerDescription, default_server
from ..features import redact_url
from ..metrics import SENT
from ..wire import TAG_BYTES, EventBatcher
from . import commbus_pb2 as pb
from .deliveries import Deliveries
from .hub import FRAME_OVERHEAD
from .link import HubLink
from .local import answer_of
from .service import SERVICE

__all__ = ["GrpcTransport"]

#: URL schemes of the other transports: a sure sign of an address meant for another one.
_OTHER_SCHEMES = frozenset(
    {"redis", "rediss", "nats", "tls", "amqp", "amqps", "http", "https", "ws", "wss"}
)

#: What each pattern guarantees through the hub (the AsyncAPI channel descriptions).
_GUARANTEES = {
    "publish": "Every process consuming the type now, and the hub's own bus; at-most-once;"
    " in order per producer (events of one loop iteration may travel as one batch frame).",
    "send": "Exactly one consuming process; held by the hub, in order, until one has room"
    " (each takes a bounded number unanswered); routed again when its process goes away"
    " unanswered; lost if the hub stops.",
    "query": "One answering process (round robin); no responder: NoHandlerError.",
}
_BATCH_FRAMES = 256
_BATCH_BYTES = 256 << 10


class GrpcTransport(BrokerTransport):
    """``transport = await GrpcTransport.connect(bus, "127.0.0.1:50051")``."""

    system = "grpc"
    default_port = 50051
    features = TransportFeatures("grpc")

    def __init__(
        self,
        bus: InMemoryCommBus,
        target: str = "127.0.0.1:50051",
        *,
        token: str | None = None,
        tls: bool | bytes = False,
        connect_timeout: float = 2.0,
        buffer_messages: int = 10_000,
        send_timeout: float = 30.0,
        batch_events: bool = True,
        channel_options: list[tuple[str, Any]] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(bus, **options)
        if send_timeout <= 0 or connect_timeout <= 0 or buffer_messages < 1:
            raise ValueError("send_timeout, connect_timeout > 0 and buffer_messages >= 1")
        scheme, sep, rest = target.partition("://")
        scheme = scheme.lower() if sep else ""
        if scheme in _OTHER_SCHEMES or (scheme in ("grpc", "grpcs") and not rest.strip("/")):
            raise ValueError(
                f"not a gRPC hub address: {redact_url(target)!r} (give HOST:PORT,"
                " grpc://HOST:PORT or grpcs://HOST:PORT)"
            )
        if scheme in ("grpc", "grpcs"):
            target = rest.rstrip("/")
            if scheme == "grpcs" and tls is False:
                tls = True
        self.target = target
        self.url = f"{'grpc' if tls is False else 'grpcs'}://{target}"
        self.send_timeout = float(send_timeout)
        self.batch_events = bool(batch_events)
        self._token = token
        self._tls = tls
        self._connect_timeout = float(connect_timeout)
        self._buffer_messages = buffer_messages
        limit = self.codec.max_frame_bytes + FRAME_OVERHEAD
        self._channel_options = [
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            *(channel_options or []),
        ]
        self.deliveries = Deliveries(self, self._respond)
        self._link: HubLink | None = None
        self._batcher: EventBatcher | None = None
        self._interests: set[tuple[str, str]] = set()
        #: Messages that re-establish this process's state on every (re)connection
        #: (services registered with the hub: see :class:`~.services.GrpcServices`).
        self.standing: dict[str, pb.ClientMessage] = {}

    @classmethod
    async def connect(
        cls, bus: InMemoryCommBus, target: str = "127.0.0.1:50051", **options: Any
    ) -> Self:
        """Build, connect and attach to ``bus`` in one call."""
        return await cls(bus, target, **options).start()

    @property
    def link(self) -> HubLink:
        if self._link is None:
            raise TransportError("the gRPC transport is not connected")
        return self._link

    def destination(self, pattern: str, message_type: str) -> str:
        return f"{pattern}:{message_type}"

    def asyncapi_server(self) -> ServerDescription:
        """The AsyncAPI hook (:mod:`..description`): the hub this process joined
        (protocol ``grpcs`` over TLS)."""
        described = default_server(self)
        return described if self._tls is False else replace(described, protocol="grpcs")

    def asyncapi_channel(self, pattern: str, message_type: str) -> ChannelDescription:
        """The AsyncAPI hook: a ``(pattern, type)`` routed by the hub, and its guarantee."""
        guarantee = _GUARANTEES.get(pattern, "Routed by the hub.")
        return ChannelDescription(
            self.destination(pattern, message_type),
            f"{guarantee} Carried on the {SERVICE}/Connect stream (AsyncAPI has no gRPC binding).",
        )

    # ------------------------------------------------------------------ connection

    def _credentials(self) -> Any:
        if self._tls is False:
            return None
        import grpc

        roots = None if self._tls is True else self._tls
        return grpc.ssl_channel_credentials(root_certificates=roots)

    async def _connect(self) -> None:
        link = HubLink(
            self.target,
            process_id=self.process_id,
            on_delivery=self.deliveries.handle,
            on_connected=self._replay,
            on_reconnect=self.metrics.reconnected,
            on_cancel=self.deliveries.cancel,
            logger=self.logger,
            credentials=self._credentials(),
            token=self._token,
            channel_options=self._channel_options,
            connect_timeout=self._connect_timeout,
            buffer_messages=self._buffer_messages,
        )
        await link.open()
        self._link = link
        if self.batch_events:
            self._batcher = EventBatcher(
                self._send_event,
                self.codec.encode_batch,
                max_bytes=min(self.codec.max_frame_bytes, _BATCH_BYTES)
                - (TAG_BYTES if self.signer is not None else 0),
                max_frames=_BATCH_FRAMES,
                spawn=self.spawn,
                logger=self.logger,
                on_dropped=self.metrics.dropped,
            )
        self.logger.info("grpc_connected", target=self.target, process=self.process_id)

    def _replay(self) -> list[pb.ClientMessage]:
        interests = [
            pb.ClientMessage(subscribe=pb.Interest(pattern=p, type=t))
            for p, t in sorted(self._interests)
        ]
        return [*interests, *self.standing.values()]

    async def _disconnect(self) -> None:
        if self._batcher is not None:
            await self._batcher.flush()
        await self.deliveries.close()
        if self._link is not None:
            await self._link.close()

    # ------------------------------------------------------------------ outgoing

    def _queue_event(self, message_type: str, data: bytes) -> Awaitable[None] | None:
        link = self.link
        if self._closed:
            raise TransportError("the gRPC transport is closed")
        batcher = self._batcher
        if batcher is not None and link.connected:
            pending = batcher.add(message_type, data)
            if pending is not False:
                return pending
        if batcher is not None:
            earlier = batcher.take(message_type)
            if earlier is not None:
                return self._after(earlier, message_type, data)
        return self._post_event(message_type, data)

    async def _after(self, earlier: Awaitable[None], message_type: str, data: bytes) -> None:
        await earlier
        pending = self._post_event(message_type, data)
        if pending is not None:
            await pending

    def _post_event(self, message_type: str, data: bytes) -> Awaitable[None] | None:
        frame = pb.Frame(type=message_type, pattern="publish", data=self.seal(data))
        return self.link.post_event(pb.ClientMessage(publish=frame))

    async def _send_event(self, item: tuple[str, bytes]) -> None:
        pending = self._post_event(*item)
        if pending is not None:
            await pending

    async def _send_frame(self, message_type: str, data: bytes, message_id: str) -> None:
        link = self.link
        frame = pb.Frame(type=message_type, pattern="send", data=self.seal(data), id=message_id)
        deadline = time.monotonic() + self.send_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not await link.wait_connected(left):
                raise TransportError(
                    f"send {message_type!r} not accepted: the gRPC hub at {self.target}"
                    f" was unreachable for {self.send_timeout}s"
                )
            rid = link.next_id()
            try:
                result = await link.request(
                    pb.ClientMessage(send=pb.Request(id=rid, frame=frame)), rid, left
                )
            except TransportError:
                continue  # the stream broke before the hub answered: send it again
            except TimeoutError:
                continue
            if result.status != pb.OK:
                raise TransportError(f"send {message_type!r} refused by the hub: {result.message}")
            return

    async def _request(self, message_type: str, data: bytes, corr: str, timeout: float) -> bytes:
        link = self.link
        if not link.connected:
            raise TransportError(f"query {message_type!r} not sent: {self.target} is unreachable")
        rid = link.next_id()
        frame = pb.Frame(type=message_type, pattern="query", data=self.seal(data))
        message = pb.ClientMessage(query=pb.Request(id=rid, frame=frame, timeout=timeout))
        try:
            result = await link.request(message, rid, timeout + 1.0)
        except TimeoutError:
            self.metrics.wire(SENT, "query")
            raise TimeoutError(f"query {message_type!r} timed out after {timeout}s") from None
        if result.status == pb.REFUSED:
            raise TransportError(f"query {message_type!r} refused by the hub: {result.message}")
        return answer_of(result.status, result.data, result.message, message_type, self)

    # ------------------------------------------------------------------ consuming

    def _respond(self, response: pb.Response) -> None:
        link = self._link
        if link is not None and not link.closed:
            link.post(pb.ClientMessage(response=response))

    async def _start_consuming(self, pattern: str, message_type: str) -> None:
        self._interests.add((pattern, message_type))
        link = self.link
        if not link.connected:
            return  # subscribed again on reconnection
        rid = link.next_id()
        interest = pb.Interest(pattern=pattern, type=message_type, id=rid)
        try:
            result = await link.request(pb.ClientMessage(subscribe=interest), rid, 10.0)
        except (TransportError, TimeoutError):
            return  # the stream broke: the reconnection subscribes again
        if result.status != pb.OK:
            self._interests.discard((pattern, message_type))
            raise TransportError(f"subscription refused by the hub: {result.message}")

    async def _stop_consuming(self, pattern: str, message_type: str) -> None:
        self._interests.discard((pattern, message_type))
        if pattern == "publish":
            self.deliveries.stop_events(message_type)
        link = self._link
        if link is not None and link.connected:
            link.post(pb.ClientMessage(unsubscribe=pb.Interest(pattern=pattern, type=message_type)))
