"""The transport's one Redis Pub/Sub connection, which reconnects by itself.

It carries the event channels (one per subscribed event type), the presence channels of
the query types this process answers (see :mod:`.queries`) and this process's reply
channel. It speaks RESP2 on a connection of its own (outside redis-py's ``PubSub``
helper, whose per-message bookkeeping costs more than the message). Redis Pub/Sub is
at-most-once: messages published while the connection is down are not seen. After a
reconnect every channel is subscribed again (backoff up to ``max_backoff`` seconds).

A message longer than ``max_reply`` bytes is never held whole: it is counted once in
``commbus_wire_rejected_total`` (reason ``oversized``), logged as ``frame_rejected``, and
skipped in the stream while the connection stays up, so no other message is lost (see
:class:`.resp.SkippingReader`). Only where the skip is not possible (redis-py's own
parser, which reads the message whole before it is rejected downstream; or the reader
could not locate the message, see :mod:`.resp`) is the connection dropped and opened
again at once, messages published to this process in that moment being missed, as in any
reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from ....types import LoggerProtocol
from ..metrics import AdapterMetrics
from .conn import UNREACHABLE
from .resp import ReplyTooLarge, Skipped, make_reader

__all__ = ["PubSubReader"]

OnMessage = Callable[[bytes], Any]
_KEEPALIVE = b"__jeeves_keepalive__"  # always subscribed: the connection stays in pub/sub mode


class PubSubReader:
    """Routes each message to the callback registered for its channel, called inline: a
    callback must not block; it may return an awaitable, which the reader awaits before
    reading on (back-pressure: Redis buffers meanwhile, up to its client output limit)."""

    def __init__(
        self,
        client: Any,
        *,
        logger: LoggerProtocol,
        metrics: AdapterMetrics,
        max_backoff: float = 1.0,
        confirm_timeout: float = 5.0,
        max_reply: int = (1 << 20) + (1 << 16),
    ) -> None:
        self._pool = client.connection_pool
        self._logger = logger
        self._metrics = metrics
        self._max_backoff = max_backoff
        self._confirm_timeout = confirm_timeout
        self._max_reply = max_reply
        self._channels: dict[bytes, OnMessage] = {}
        self._confirm: dict[bytes, list[asyncio.Future[None]]] = {}
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self._ready.wait()

    async def subscribe(self, channel: str, callback: OnMessage) -> None:
        """Route ``channel`` to ``callback``; returns once Redis confirmed the
        subscription (at once while disconnected: the reconnect subscribes it)."""
        key = channel.encode()
        self._channels[key] = callback
        conn = self._conn
        if conn is None:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirm.setdefault(key, []).append(waiter)
        try:
            await conn.send_command("SUBSCRIBE", key, check_health=False)
            async with asyncio.timeout(self._confirm_timeout):
                await waiter
        except (TimeoutError, *UNREACHABLE):
            pass  # the reader resubscribes everything after reconnecting
        finally:
            waiters = self._confirm.get(key)
            if waiters and waiter in waiters:
                waiters.remove(waiter)

    async def unsubscribe(self, channel: str) -> None:
        key = channel.encode()
        if self._channels.pop(key, None) is not None and self._conn is not None:
            with contextlib.suppress(*UNREACHABLE):
                await self._conn.send_command("UNSUBSCRIBE", key, check_health=False)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect()

    async def _run(self) -> None:
        backoff = 0.02
        failed = False
        while True:
            try:
                conn = self._pool.make_connection()
                await conn.connect()
                await conn.send_command(
                    "SUBSCRIBE", _KEEPALIVE, *self._channels, check_health=False
                )
                self._conn = conn
                if failed:
                    self._metrics.reconnected()
                    self._logger.info("redis_pubsub_reconnected", channels=len(self._channels))
                failed = False
                backoff = 0.02
                self._ready.set()
                await self._read(conn)
            except ReplyTooLarge as exc:
                self._oversized(str(exc))
                failed = True
                await self._drop()  # discards the rest of the message; reconnect at once
            except UNREACHABLE as exc:
                if not failed:
                    self._logger.warning("redis_pubsub_disconnected", error_type=type(exc).__name__)
                failed = True
                self._ready.set()
                await self._drop()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)

    def _oversized(self, detail: str) -> None:
        self._metrics.rejected("oversized")
        self._logger.warning(
            "frame_rejected", transport="redis", pattern="pubsub", reason="oversized", detail=detail
        )

    async def _read(self, conn: Any) -> None:
        channels = self._channels
        read = make_reader(conn, self._max_reply, skip_oversized=True).read
        while True:
            msg = await read()
            if msg.__class__ is not list:
                if msg.__class__ is Skipped:
                    self._oversized(f"a message of {msg.size} bytes, skipped unread")
                continue  # or an error reply (to a bad SUBSCRIBE): nothing to route
            kind = msg[0]
            if kind == b"message":
                callback = channels.get(msg[1])
                if callback is None:
                    continue
                try:
                    wait = callback(msg[2])
                    if wait is not None:  # a consumer is full: back-pressure the socket
                        await wait
                except Exception as exc:
                    self._logger.error("redis_pubsub_callback_failed", error=str(exc))
            elif kind == b"subscribe":
                for waiter in self._confirm.pop(msg[1], ()):
                    if not waiter.done():
                        waiter.set_result(None)
