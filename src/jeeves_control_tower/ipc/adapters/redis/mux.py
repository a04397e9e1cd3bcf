"""One Redis connection shared by every writer of a transport, reconnecting by itself.

PUBLISH, XADD, acknowledgements, query requests and replies all go through a
:class:`MuxConnection`. Commands are written in the order they are submitted; every
command submitted during one event-loop iteration goes out in one write (automatic
pipelining, no task switch), and replies are matched to callers in order (Redis answers
in order). A reader task consumes the replies.

Contract while Redis is unreachable (connection refused, reset, or no reply for
``reply_timeout`` seconds while commands are outstanding): the connection is dropped and
re-opened with exponential backoff (up to ``max_backoff`` seconds). Commands that were
written but not answered, and every later *bufferable* command, are kept in memory, at
most ``buffer_size`` of them, and written again after the reconnect in their original
order: the caller's ``submit`` returns ``None`` as soon as its command is buffered. A
command that cannot be buffered (``buffer_size`` reached, ``buffer_size=0``, or submitted
with ``bufferable=False`` like a query) fails with :class:`TransportError`. Nothing is
dropped silently. A command written just before the connection died may therefore
execute twice (at-least-once; command ids let consumers dedupe). Buffered commands live
in this process: they are lost if it dies before Redis comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any

from redis.exceptions import ResponseError

from ....types import LoggerProtocol
from ... import TransportError
from ..metrics import AdapterMetrics
from .conn import UNREACHABLE
from .resp import make_reader, make_writer

__all__ = ["MuxConnection"]

_MAX_BATCH = 1024


class _Item:
    __slots__ = ("args", "bufferable", "counted", "future")

    def __init__(self, args: tuple[Any, ...], future: asyncio.Future[Any] | None, bufferable: bool):
        self.args = args
        self.future = future
        self.bufferable = bufferable
        self.counted = False  # held in the reconnect buffer (and in the gauge)


class MuxConnection:
    """See the module docstring. Event-loop-thread only. A reply longer than ``max_reply``
    bytes counts as a broken connection (replies to these commands are short)."""

    def __init__(
        self,
        client: Any,
        *,
        buffer_size: int,
        metrics: AdapterMetrics,
        logger: LoggerProtocol,
        reply_timeout: float = 5.0,
        max_backoff: float = 1.0,
        high_water: int = 20_000,
        max_reply: int = 1 << 20,
    ) -> None:
        if not isinstance(buffer_size, int) or buffer_size < 0:
            raise ValueError(f"buffer_size must be an int >= 0, got {buffer_size!r}")
        self._pool = client.connection_pool
        self.buffer_size = buffer_size
        self._metrics = metrics
        self._logger = logger
        self._reply_timeout = reply_timeout
        self._max_backoff = max_backoff
        self._max_reply = max_reply
        self._conn: Any = None
        self._write: Callable[[list[bytes]], None] = _not_open
        self._unsent: deque[_Item] = deque()
        self._inflight: deque[_Item] = deque()
        self._buffered = 0
        self._up = False
        self._closed = False
        self._flush_handle: asyncio.Handle | None = None
        self._reader: asyncio.Task[None] | None = None
        self._reconnector: asyncio.Task[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._drained = asyncio.Event()
        self._high_water = high_water
        self._last_progress = 0.0
        self._closers: set[asyncio.Task[None]] = set()

    @property
    def connected(self) -> bool:
        return self._up

    @property
    def buffered(self) -> int:
        return self._buffered

    async def start(self) -> None:
        """Open the connection (errors propagate: fail loudly at startup)."""
        await self._open()
        self._watch()

    async def _open(self) -> None:
        conn = self._pool.make_connection()
        await conn.connect()
        self._conn = conn

        def failed(exc: BaseException) -> None:
            if self._conn is conn:  # not a connection dropped before
                self._broken(exc)

        self._write = make_writer(conn, failed)
        self._up = True
        self._last_progress = asyncio.get_running_loop().time()
        self._reader = asyncio.get_running_loop().create_task(self._read(conn))
        self._schedule_flush()

    # ------------------------------------------------------------------ submitting

    async def submit(self, *args: Any, bufferable: bool = True) -> Any:
        """Write one command and return its reply (``ResponseError`` raised), or ``None``
        once it is buffered because Redis is unreachable."""
        if self._closed:
            raise TransportError("the transport is closed")
        if not self._up:
            self._buffer_or_fail(_Item(args, None, bufferable))
            return None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._push(_Item(args, future, bufferable))
        return await future

    def submit_nowait(self, *args: Any) -> None:
        """Queue one command without waiting for its reply (errors are logged). Callers
        that may queue a lot should ``await writable()`` now and then."""
        if self._closed:
            raise TransportError("the transport is closed")
        if not self._up:
            self._buffer_or_fail(_Item(args, None, True))
            return
        self._push(_Item(args, None, True))
        if len(self._unsent) >= _MAX_BATCH:  # a producer that never yields: write now
            self._flush()

    @property
    def backlogged(self) -> bool:
        """More commands are outstanding than Redis has answered lately."""
        return len(self._inflight) + len(self._unsent) >= self._high_water

    async def writable(self) -> None:
        """Wait until the outstanding commands fall below half the high-water mark."""
        while self._up and len(self._inflight) + len(self._unsent) >= self._high_water // 2:
            self._drained.clear()
            await self._drained.wait()

    def _buffer_or_fail(self, item: _Item) -> None:
        if not item.bufferable or self._buffered >= self.buffer_size:
            raise TransportError(
                f"redis is unreachable; {item.args[0]} not sent (reconnect buffer"
                f" {self._buffered}/{self.buffer_size}"
                f"{'' if item.bufferable else ', command not bufferable'})"
            )
        item.counted = True
        self._buffered += 1
        self._metrics.buffered(1)
        self._unsent.append(item)
        self._idle.clear()

    def _push(self, item: _Item) -> None:
        self._unsent.append(item)
        self._idle.clear()
        if self._flush_handle is None:
            if not self._inflight and len(self._unsent) == 1:
                self._flush()  # idle connection: write at once (latency); bursts batch up
            else:
                self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _schedule_flush(self) -> None:
        if self._flush_handle is None and self._unsent:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._up or not self._unsent:
            return
        items, self._unsent = self._unsent, deque()
        conn = self._conn
        try:
            packed = conn.pack_commands([item.args for item in items])
            if not self._inflight:
                self._last_progress = asyncio.get_running_loop().time()
            self._inflight.extend(items)
            self._write(packed)
        except Exception as exc:
            self._broken(exc)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every command so far was answered by Redis."""
        async with asyncio.timeout(timeout):
            await self._idle.wait()

    # ------------------------------------------------------------------ replies

    async def _read(self, conn: Any) -> None:
        inflight = self._inflight
        loop = asyncio.get_running_loop()
        read = make_reader(conn, self._max_reply).read
        try:
            while True:
                reply = await read()  # an error reply comes back as a ResponseError value
                self._last_progress = loop.time()
                self._settle(inflight.popleft(), reply)
                if not inflight and not self._unsent:
                    self._idle.set()
                    self._drained.set()
                elif len(inflight) == self._high_water // 4:
                    self._drained.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # unreachable, or a reply with nobody waiting (desync)
            self._broken(exc)

    def _settle(self, item: _Item, reply: Any) -> None:
        if item.counted:
            self._buffered -= 1
            self._metrics.buffered(-1)
        future = item.future
        if future is None:
            if isinstance(reply, Exception):
                self._logger.error(
                    "redis_command_failed", command=str(item.args[0]), error=str(reply)
                )
        elif not future.done():
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    # ------------------------------------------------------------------ failure

    def _watch(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        if self._up and self._inflight and loop.time() - self._last_progress > self._reply_timeout:
            self._broken(TimeoutError(f"no reply from redis in {self._reply_timeout}s"))
        self._watchdog = loop.call_later(min(1.0, self._reply_timeout / 2), self._watch)

    def _broken(self, exc: BaseException) -> None:
        if not self._up:
            return
        self._up = False
        self._logger.warning(
            "redis_unreachable", error_type=type(exc).__name__, buffer_size=self.buffer_size
        )
        conn, self._conn = self._conn, None
        reader = self._reader
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        pending = list(self._inflight) + list(self._unsent)
        self._inflight.clear()
        self._unsent.clear()
        for item in pending:
            if item.counted:
                self._unsent.append(item)
                continue
            if item.future is not None and item.future.done():
                continue  # its caller was cancelled: the command goes with it
            try:
                self._buffer_or_fail(item)
            except TransportError as error:
                if item.future is not None:
                    item.future.set_exception(error)
                else:
                    self._logger.error("redis_command_dropped", command=str(item.args[0]))
                continue
            if item.future is not None:
                item.future.set_result(None)  # buffered: the caller may carry on
                item.future = None
        if not self._unsent:
            self._idle.set()
        self._drained.set()  # writers waiting for room now buffer or fail instead
        loop = asyncio.get_running_loop()
        if conn is not None:
            closer = loop.create_task(_disconnect(conn))
            self._closers.add(closer)
            closer.add_done_callback(self._closers.discard)
        if not self._closed:
            self._reconnector = loop.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        backoff = 0.02
        while not self._closed:
            await asyncio.sleep(backoff)
            try:
                await self._open()
            except (*UNREACHABLE, ResponseError) as exc:
                self._logger.debug("redis_reconnect_failed", error_type=type(exc).__name__)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            self._metrics.reconnected()
            self._logger.info("redis_reconnected", buffered=self._buffered)
            return

    async def close(self, timeout: float = 2.0) -> None:
        """Wait (up to ``timeout``) for outstanding commands, then close. Commands still
        unwritten after that are failed or, if buffered, reported in the log."""
        if self._closed:
            return
        with contextlib.suppress(TimeoutError):
            await self.flush(timeout)
        self._closed = True
        for handle in (self._watchdog, self._flush_handle):
            if handle is not None:
                handle.cancel()
        tasks = [t for t in (self._reader, self._reconnector, *self._closers) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        leftovers = list(self._inflight) + list(self._unsent)
        if leftovers:
            self._logger.error("redis_closed_with_unsent", commands=len(leftovers))
        for item in leftovers:
            if item.future is not None and not item.future.done():
                item.future.set_exception(TransportError("transport closed before the reply"))
        if self._buffered:
            self._metrics.buffered(-self._buffered)
            self._buffered = 0
        if self._conn is not None:
            await _disconnect(self._conn)
            self._conn = None


def _not_open(packed: list[bytes]) -> None:
    raise TransportError("the connection is not open")


async def _disconnect(conn: Any) -> None:
    with contextlib.suppress(Exception):
        await conn.disconnect()
