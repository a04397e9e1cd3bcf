"""A process's one Connect stream to the hub, kept open: connect, reconnect, buffer.

:class:`HubLink` owns the gRPC channel and the stream. Everything the process sends goes
through one ordered outbox, one write at a time (gRPC allows no more), the first write of
an idle stream started in the caller:

- :meth:`post` queues a message (an event, an answer, a subscription); while the hub is
  unreachable the outbox is the bounded reconnect buffer: at most ``buffer_messages``
  events wait (:meth:`post_event` then raises :class:`TransportError`); answers and control
  messages are never refused (they are few and bounded by what the hub delivered).
- :meth:`request` sends a request and waits for its ``Result`` (a send, a query, a
  dispatch, an acknowledged subscription); a request whose stream breaks before its
  result arrives fails with :class:`TransportError` (a send is retried by the transport).

:meth:`open` fails fast: the first connection must be ready within ``connect_timeout``
and the hub must welcome this process (else :class:`TransportError`: unreachable,
``UNAUTHENTICATED``, TLS failure). Once open, a broken stream is reopened by itself
(backoff 0.05 s doubling to 2 s, forever); on every (re)connection ``on_connected()``
gives the messages that re-establish the process's state (subscriptions, services),
written before anything buffered. Event-loop-thread only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Callable
from typing import Any

from ... import TransportError
from ...bus.eager import Resume, start
from . import commbus_pb2 as pb
from .carry import Carry

__all__ = ["HubLink"]

_CONNECT = "/jeeves.commbus.v1.CommBus/Connect"


class HubLink:
    def __init__(
        self,
        target: str,
        *,
        process_id: str,
        on_delivery: Callable[[pb.Delivery], None],
        on_connected: Callable[[], list[pb.ClientMessage]],
        logger: Any,
        on_reconnect: Callable[[], None] = lambda: None,
        on_cancel: Callable[[int], None] = lambda rid: None,
        credentials: Any = None,
        token: str | None = None,
        channel_options: list[tuple[str, Any]] | None = None,
        connect_timeout: float = 2.0,
        buffer_messages: int = 10_000,
    ) -> None:
        self.target = target
        self.process_id = process_id
        self.on_delivery = on_delivery
        #: ``on_cancel(delivery_id)``: the hub no longer waits for that delivery's answer.
        self.on_cancel = on_cancel
        self.on_connected = on_connected
        self.on_reconnect = on_reconnect
        self.logger = logger
        self._credentials = credentials
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._options = channel_options or []
        self.connect_timeout = connect_timeout
        self.buffer_messages = buffer_messages
        self.welcome: pb.Welcome | None = None
        self._channel: Any = None
        self._call: Any = None
        self._outbox: deque[pb.ClientMessage] = deque()
        self._events = 0  # events in the outbox
        self._writing = False  # a drain of the outbox is running
        self._drainer: Carry | None = None
        self._space = asyncio.Event()
        self._emptied = asyncio.Event()  # set when the writer empties the outbox
        self._connected = asyncio.Event()
        self._pending: dict[int, asyncio.Future[pb.Result]] = {}
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[Any]] = []
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def buffered(self) -> int:
        """Events waiting in the outbox (the reconnect buffer while disconnected)."""
        return self._events

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        import grpc

        if self._credentials is not None:
            self._channel = grpc.aio.secure_channel(self.target, self._credentials, self._options)
        else:
            self._channel = grpc.aio.insecure_channel(self.target, self._options)
        try:
            await asyncio.wait_for(self._channel.channel_ready(), self.connect_timeout)
            await self._start_stream()
        except BaseException as exc:
            await self._channel.close()
            if isinstance(exc, TimeoutError):
                hint = (
                    "TLS on: is the hub serving TLS, with a certificate this process trusts?"
                    if self._credentials is not None
                    else "is it up, and not serving TLS only (then give tls=True)?"
                )
                raise TransportError(
                    f"the gRPC hub at {self.target} did not answer within"
                    f" {self.connect_timeout}s ({hint})"
                ) from None
            if isinstance(exc, grpc.aio.AioRpcError):
                raise TransportError(
                    f"the gRPC hub at {self.target} refused the connection:"
                    f" {exc.code().name}: {exc.details()}"
                ) from None
            raise
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._keep())]
        self._kick()

    async def _start_stream(self) -> None:
        """Open the stream, say hello, wait for the welcome (raises when refused)."""
        call = self._channel.stream_stream(
            _CONNECT,
            request_serializer=pb.ClientMessage.SerializeToString,
            response_deserializer=pb.HubMessage.FromString,
        )(metadata=self._metadata)
        try:
            await call.write(pb.ClientMessage(hello=pb.Hello(process_id=self.process_id)))
            first = await asyncio.wait_for(call.read(), self.connect_timeout)
        except BaseException:
            call.cancel()
            raise
        if not isinstance(first, pb.HubMessage) or first.WhichOneof("kind") != "welcome":
            call.cancel()
            raise TransportError(f"the gRPC hub at {self.target} did not welcome this process")
        self.welcome = first.welcome
        self._call = call
        replay = self.on_connected()
        self._outbox.extendleft(reversed(replay))
        self._connected.set()
        if self._tasks:  # a reconnection (open() starts writing itself)
            self._kick()

    async def close(self, drain: float = 2.0) -> None:
        """Write what is queued (for at most ``drain`` seconds, while connected), half-close
        the stream and wait (as long again at most) for the hub to end it, then close the
        channel; pending requests fail with :class:`TransportError`."""
        self._emptied.clear()
        if self._outbox and self.connected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._emptied.wait(), drain)
        self._closed = True
        call = self._call
        if call is not None and self.connected:
            # Half-close, then let the hub end the stream: it has read everything written
            # by then (cancelling at once could drop what gRPC had not sent yet).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(call.done_writing(), 1.0)
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=drain)
        self._connected.clear()
        if self._drainer is not None:
            self._drainer.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if call is not None:
            call.cancel()
        self._fail_pending("the gRPC transport is closed")
        if self._channel is not None:
            await self._channel.close()

    async def _keep(self) -> None:
        """Read the stream; when it breaks, reopen it (forever, until closed)."""
        delay = 0.05
        while not self._closed:
            call = self._call
            try:
                if call is not None:
                    await self._read(call)
            except Exception as exc:
                self.logger.warning(
                    "grpc_stream_lost", target=self.target, error=type(exc).__name__
                )
            self._connected.clear()
            self._call = None
            self._fail_pending(f"the stream to the gRPC hub at {self.target} broke")
            if call is not None:
                call.cancel()
            while not self._closed:
                await asyncio.sleep(delay)
                try:
                    await self._start_stream()
                except Exception as exc:
                    delay = min(delay * 2, 2.0)
                    self.logger.debug("grpc_reconnect_failed", error=type(exc).__name__)
                    continue
                delay = 0.05
                self.on_reconnect()
                self.logger.info("grpc_reconnected", target=self.target)
                break

    async def _read(self, call: Any) -> None:
        import grpc

        on_delivery = self.on_delivery
        pending = self._pending
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                return
            kind = message.WhichOneof("kind")
            if kind == "delivery":
                on_delivery(message.delivery)
                if message.delivery.pattern == "query":
                    await _after_waiters()
            elif kind == "result":
                future = pending.pop(message.result.id, None)
                if future is not None and not future.done():
                    future.set_result(message.result)
                    await _after_waiters()
            elif kind == "cancel":
                self.on_cancel(message.cancel.id)
            elif kind == "notice":
                notice = message.notice
                self.logger.warning(
                    "grpc_hub_notice", status=pb.Status.Name(notice.status),
                    message=notice.message[:300], message_type=notice.type[:200],
                )  # fmt: skip

    def _fail_pending(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(TransportError(why))

    # ------------------------------------------------------------------ writing

    def post(self, message: pb.ClientMessage) -> None:
        """Queue ``message`` (never refused: answers and control messages)."""
        if self._closed:
            raise TransportError("the gRPC transport is closed")
        self._outbox.append(message)
        self._kick()

    def post_event(self, message: pb.ClientMessage) -> asyncio.Future[None] | None:
        """Queue an event: ``None`` once queued; while connected and the buffer is full,
        an awaitable for room (back-pressure); while disconnected and full, raises."""
        if self._events >= self.buffer_messages:
            if not self.connected or self._closed:
                raise TransportError(
                    f"the gRPC hub at {self.target} is unreachable and {self.buffer_messages}"
                    " events are buffered already"
                )
            return asyncio.ensure_future(self._post_later(message))
        self._events += 1
        self.post(message)
        return None

    async def _post_later(self, message: pb.ClientMessage) -> None:
        while self._events >= self.buffer_messages:
            self._space.clear()
            await self._space.wait()
        self._events += 1
        self.post(message)

    async def request(self, message: pb.ClientMessage, rid: int, timeout: float) -> pb.Result:
        """Send ``message`` (a request numbered ``rid``) and wait for its ``Result``;
        ``TimeoutError`` after ``timeout`` seconds. Given up without a result (timed out,
        or the caller cancelled), the hub is sent a ``cancel`` for ``rid`` (it forgets the
        request and tells the responder). (A timer on the future itself, not
        ``asyncio.wait_for``: one event-loop iteration less per request.)"""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[pb.Result] = loop.create_future()
        self._pending[rid] = future
        try:
            self.post(message)  # the write starts here: the timer is armed after it
            timer = loop.call_later(timeout, _expire, future)
            try:
                return await future
            finally:
                timer.cancel()
        finally:
            self._pending.pop(rid, None)
            if not future.done() or future.cancelled() or future.exception() is not None:
                self._give_up(rid)

    def _give_up(self, rid: int) -> None:
        if self.connected and not self._closed:
            self.post(pb.ClientMessage(cancel=pb.Cancel(id=rid)))

    def next_id(self) -> int:
        return next(self._ids)

    async def wait_connected(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout)
        return self.connected

    def _kick(self) -> None:
        """Start writing the outbox unless a write is running or the stream is down. The
        first write starts here, in the caller (gRPC has the bytes before this returns: no
        event-loop hop per message); a write that must wait goes on from its future's
        callback (:class:`~.carry.Carry`), not in a task."""
        if self._writing or not self._outbox or self._closed or not self._connected.is_set():
            return
        self._writing = True
        try:
            rest = start(self._drain, True, self._call)
        except Exception as exc:
            self._write_failed(exc)
            return
        if rest.__class__ is Resume:
            self._drainer = Carry(rest, self._drained)

    def _drained(self, exc: BaseException | None) -> None:
        self._drainer = None
        if isinstance(exc, Exception):
            self._write_failed(exc)

    def _write_failed(self, exc: Exception) -> None:
        """The stream broke under a write: the message stays first in the outbox, and the
        reconnection (:meth:`_keep`, whose read fails too) writes it again."""
        self._writing = False
        self.logger.debug("grpc_write_failed", error=type(exc).__name__)
        self._connected.clear()

    async def _drain(self, call: Any) -> None:
        outbox = self._outbox
        while outbox and self._call is call and self._connected.is_set():
            message = outbox[0]
            await call.write(message)
            outbox.popleft()
            if message.WhichOneof("kind") == "publish":
                self._events -= 1
                if self._events < self.buffer_messages:
                    self._space.set()
        if not outbox:
            self._emptied.set()
        self._writing = False
        if outbox and self._call is not call:
            self._kick()  # reconnected meanwhile: carry on on the new stream


async def _after_waiters() -> None:
    """Let what a result or a query woke run before the next read is posted (posting a
    read costs a gRPC batch: it need not delay the answer or the caller's next write)."""
    await asyncio.sleep(0)


def _expire(future: asyncio.Future[pb.Result]) -> None:
    if not future.done():
        future.set_exception(TimeoutError("no result from the hub in time"))
