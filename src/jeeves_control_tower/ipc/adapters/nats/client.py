"""nats-py's client with a direct path for the transport's event subscriptions.

nats-py hands every message of a callback subscription through a ``Msg`` object, an
``asyncio.Queue`` and the subscription's own task before the callback sees it; for a
small event that costs more than the rest of the client's work together. The transport
only needs the payload bytes of an event, in order, so :class:`DirectClient` routes the
messages of the subscriptions registered with :meth:`DirectClient.route` straight to a
callable (the transport's :class:`~..pump.OrderedPump`), called inline by the reading
task: it must not block. Query subscriptions are routed the same way with their reply
subject (:meth:`DirectClient.route_with_reply`), and the replies to this client's own
requests made with :meth:`DirectClient.request_direct` go from the reading task straight
to the waiting request (nats-py's ``request`` passes each reply through a ``Msg``, the
reply subscription's queue and task, and ``asyncio.wait_for``: three loop iterations
between the reply's arrival and the requester running again, where one is enough).
A request and the reply to a query are written to the socket at once
(:meth:`DirectClient.publish_now`), not by nats-py's flusher task in a later loop
iteration: a lone message waits for nothing to batch with. Everything else (events,
JetStream, ``request``) takes nats-py's ordinary path.

The direct path needs nats-py's ``Client._process_msg(sid, subject, reply, data,
headers)`` hook; :data:`DIRECT_SUPPORTED` is ``False`` when the installed nats-py does not
have it in that shape, and the transport then uses ordinary callback subscriptions.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.aio.transport import TcpTransport
from nats.protocol.command import pub_cmd

__all__ = ["DIRECT_SUPPORTED", "DirectClient"]

Route = Callable[[bytes], bool]
#: A route that also gets the message's reply subject (queries)
ReplyRoute = Callable[[bytes, str], bool]

_EXPECTED = ["self", "sid", "subject", "reply", "data", "headers"]


def _supported() -> bool:
    try:
        hook = Client._process_msg
        return (
            inspect.iscoroutinefunction(hook)
            and list(inspect.signature(hook).parameters) == _EXPECTED
        )
    except Exception:  # pragma: no cover - another nats-py
        return False


#: Whether the installed nats-py has the hook the direct path overrides.
DIRECT_SUPPORTED = _supported()

#: publish_now leaves the writing to nats-py's flusher (which waits for the socket to
#: drain) once this much is waiting in the socket's write buffer.
_WRITE_BUFFER_LIMIT = 64 << 10


class DirectClient(Client):
    """``nats.aio.client.Client`` plus :meth:`route` (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._routes: dict[int, Route] = {}
        self._reply_routes: dict[int, ReplyRoute] = {}
        # request_direct: the reply subscription ("{inbox}.{nuid}.*"), its subject prefix
        # and the requests waiting, by the last token of their reply subject.
        self._replies_sid: int | None = None
        self._replies_prefix = ""
        self._waiting: dict[str, asyncio.Future[bytes]] = {}

    async def request_direct(self, subject: str, payload: bytes, timeout: float) -> bytes:
        """The payload of the reply to a request (see the module docstring); raises
        ``nats.errors.NoRespondersError`` when no subscriber took it and
        ``nats.errors.TimeoutError`` when no reply came within ``timeout`` seconds, as
        ``request`` does (which it falls back to without the direct path)."""
        if not DIRECT_SUPPORTED:
            msg = await self.request(subject, payload, timeout=timeout)
            data: bytes = msg.data
            return data
        if self._replies_sid is None:
            await self._subscribe_replies()
        token = self._nuid.next().decode()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        try:
            await self.publish_now(subject, payload, reply=self._replies_prefix + token)
            timer = future.get_loop().call_later(timeout, _expire, future)
            try:
                return await future
            finally:
                timer.cancel()
        finally:
            self._waiting.pop(token, None)

    async def publish_now(self, subject: str, payload: bytes, reply: str = "") -> None:
        """``publish``, with the message (and what is pending before it, in order) written
        to the socket now instead of by the flusher task; ``publish`` itself while not
        connected, for a large message or when the socket is not keeping up."""
        transport = self._transport
        if (
            not self.is_connected
            or type(transport) is not TcpTransport
            or len(payload) > self._max_payload
            or not subject
        ):
            await self.publish(subject, payload, reply=reply)
            return
        writer = getattr(transport, "_io_writer", None)  # None: another nats-py, or closed
        if writer is None or writer.transport.get_write_buffer_size() > _WRITE_BUFFER_LIMIT:
            await self.publish(subject, payload, reply=reply)
            return
        pending = self._pending
        pending.append(pub_cmd(subject, reply, payload))
        stats = self.stats
        stats["out_msgs"] += 1
        stats["out_bytes"] += len(payload)
        writer.writelines(pending)
        self._pending = []
        self._pending_data_size = 0

    async def _subscribe_replies(self) -> None:
        prefix = f"{self._inbox_prefix.decode()}.{self._nuid.next().decode()}."
        sub = await self.subscribe(prefix + "*", cb=_unrouted_reply)
        if self._replies_sid is None:  # not subscribed meanwhile by a concurrent request
            self._replies_prefix = prefix
            self._replies_sid = sub._id
        else:
            await sub.unsubscribe()

    def route(self, sub: Subscription, deliver: Route) -> bool:
        """Hand the payloads of ``sub`` (a subscription of this client) to ``deliver``
        instead of its callback. ``deliver(data)`` returns ``False`` when it cannot take
        the message (full): the message is dropped and reported as a slow consumer, as
        nats-py does. Returns whether the direct path is in use."""
        return self._route(sub, deliver, lambda msg: deliver(msg.data), self._routes)

    def route_with_reply(self, sub: Subscription, deliver: ReplyRoute) -> bool:
        """:meth:`route` for requests: ``deliver(data, reply_subject)``."""
        return self._route(
            sub, deliver, lambda msg: deliver(msg.data, msg.reply), self._reply_routes
        )

    def _route(
        self,
        sub: Subscription,
        deliver: Any,
        replay: Callable[[Any], object],
        routes: dict[int, Any],
    ) -> bool:
        sid = getattr(sub, "_id", None)
        queue = getattr(sub, "_pending_queue", None)
        if (
            not DIRECT_SUPPORTED
            or type(sid) is not int
            or self._subs.get(sid) is not sub
            or queue is None
        ):
            return False
        # Messages that arrived while subscribing went to the subscription's queue: they
        # come first, so the order stays that of the server.
        while not queue.empty():
            msg = queue.get_nowait()
            queue.task_done()
            sub._pending_size -= len(msg.data)
            replay(msg)
        routes[sid] = deliver
        return True

    def unroute(self, sub: Subscription) -> None:
        """Back to the subscription's own callback (before unsubscribing it)."""
        sid = getattr(sub, "_id", None)
        if type(sid) is int:
            self._routes.pop(sid, None)
            self._reply_routes.pop(sid, None)

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        deliver = self._routes.get(sid)
        if deliver is not None:
            taken = deliver(data)
        elif sid == self._replies_sid:
            self._reply_arrived(subject, data, headers)
            return
        else:
            with_reply = self._reply_routes.get(sid) if self._reply_routes else None
            if with_reply is None:
                await super()._process_msg(sid, subject, reply, data, headers)
                return
            taken = with_reply(data, reply.decode())
        stats = self.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        if not taken:
            from nats.errors import SlowConsumerError

            sub = self._subs.get(sid)
            if sub is not None:
                error = SlowConsumerError(
                    subject=subject.decode(), reply=reply.decode(), sid=sid, sub=sub
                )
                await self._error_cb(error)

    def _reply_arrived(self, subject: bytes, data: bytes, headers: bytes) -> None:
        stats = self.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        token = subject[len(self._replies_prefix) :].decode(errors="replace")
        future = self._waiting.get(token)
        if future is None or future.done():
            return  # too late (timed out), or a second reply to one request
        if headers and b" 503" in headers.split(b"\r\n", 1)[0]:
            from nats.errors import NoRespondersError

            future.set_exception(NoRespondersError())
        else:
            future.set_result(data)


def _expire(future: asyncio.Future[bytes]) -> None:
    if not future.done():
        from nats.errors import TimeoutError as NatsTimeoutError

        future.set_exception(NatsTimeoutError())


async def _unrouted_reply(msg: Any) -> None:
    """The reply subscription's callback; never called while the direct path is in use
    (a reply the subscription queued before it was routed is of no request any more)."""
