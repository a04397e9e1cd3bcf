"""Raw reading and writing on the two hot connections (writes' replies, Pub/Sub).

After redis-py connected a connection (handshake, AUTH, SELECT, TLS done, nothing
half-read), the transport reads its replies with ``hiredis.Reader`` (the C parser
redis-py itself uses) fed 64 KiB at a time from the connection's stream, and writes packed
commands to the stream without awaiting: several times cheaper per message than
``read_response`` / ``send_packed_command``. This takes two private attributes of
redis-py's ``Connection``, ``_reader`` and ``_writer`` (the asyncio streams);
:data:`FAST_PATH` says whether the installed redis-py is the tested major (8) and hiredis
is importable, and each connection is checked again for the two streams. Otherwise the
connection is read with redis-py's own ``read_response`` and written with
``send_packed_command`` (:func:`make_reader`, :func:`make_writer`): slower, still correct.

Contract of ``await reader.read()``: the next reply; an error reply is returned as a
:class:`ResponseError` value (``NoScriptError`` for ``NOSCRIPT``), never raised, so the
caller can match it to its command. End of stream raises ``ConnectionError``; a reply that
would need more than ``max_reply`` bytes buffered raises :class:`ReplyTooLarge` (a
``ConnectionError``) without reading it further: the caller drops the connection, which
discards the rest. The fast reader therefore never holds more than about ``max_reply`` +
64 KiB of one reply; the fallback (redis-py's parsing) reads a reply whole, whatever its
size.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

__all__ = [
    "FAST_PATH",
    "HiredisReader",
    "Reader",
    "ReplyTooLarge",
    "Stream",
    "fast_path_available",
    "make_reader",
    "make_writer",
]

_CHUNK = 1 << 16
#: redis-py majors whose connections were tested to keep their streams in ``_reader`` /
#: ``_writer`` (pyproject pins ``redis<9`` to match).
TESTED_MAJORS = frozenset({8})


def fast_path_available(redis_version: str = redis.__version__) -> bool:
    """Whether hiredis is importable and ``redis_version`` is a tested redis-py major."""
    try:
        import hiredis  # noqa: F401
    except ImportError:
        return False
    major = redis_version.split(".", 1)[0]
    return major.isdigit() and int(major) in TESTED_MAJORS


#: Read with hiredis and write to the stream directly (see the module docstring).
FAST_PATH = fast_path_available()


class ReplyTooLarge(RedisConnectionError):
    """A reply exceeded the reader's ``max_reply`` bytes; the connection must be dropped."""


class Reader(Protocol):
    async def read(self) -> Any: ...


class Stream(Protocol):
    """What the fast reader needs of a stream (an ``asyncio.StreamReader``)."""

    async def read(self, n: int) -> bytes: ...


def _reply_error(text: str) -> ResponseError:
    return NoScriptError(text) if text.startswith("NOSCRIPT") else ResponseError(text)


class HiredisReader:
    """Replies parsed by ``hiredis.Reader`` from ``stream``, at most ``max_reply`` bytes
    buffered for one reply (see the module docstring)."""

    __slots__ = ("_gets", "_max", "_parser", "_stream")

    def __init__(self, stream: Stream, max_reply: int) -> None:
        import hiredis

        self._stream = stream
        self._max = max_reply
        self._parser = hiredis.Reader(
            protocolError=RedisConnectionError,
            replyError=_reply_error,
            notEnoughData=False,
        )
        self._gets = self._parser.gets

    async def read(self) -> Any:
        reply = self._gets()
        while reply is False:
            # hiredis keeps a reply's bytes until it is complete (plus under 1 KiB already
            # parsed): bound them before reading more.
            held = self._parser.len()
            if held > self._max:
                raise ReplyTooLarge(f"a reply exceeds {self._max} bytes ({held} read so far)")
            chunk = await self._stream.read(_CHUNK)
            if not chunk:
                raise RedisConnectionError("redis closed the connection")
            self._parser.feed(chunk)
            reply = self._gets()
        return reply


class _FallbackReader:
    """redis-py's own parser (unbounded: it reads a reply whole)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def read(self) -> Any:
        try:
            return await self._conn.read_response()
        except ResponseError as exc:
            return exc


def _streams(conn: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    reader = getattr(conn, "_reader", None)
    writer = getattr(conn, "_writer", None)
    if (
        FAST_PATH
        and isinstance(reader, asyncio.StreamReader)
        and isinstance(writer, asyncio.StreamWriter)
        and getattr(conn, "protocol", 2) in (2, "2")
    ):
        return reader, writer
    return None


def make_reader(conn: Any, max_reply: int) -> Reader:
    """The reader of ``conn``'s replies (after ``connect()``): hiredis on its stream when
    :data:`FAST_PATH` holds and the stream is there, redis-py's parser otherwise."""
    streams = _streams(conn)
    if streams is None:
        return _FallbackReader(conn)
    return HiredisReader(streams[0], max_reply)


def make_writer(
    conn: Any, on_error: Callable[[BaseException], None]
) -> Callable[[list[bytes]], None]:
    """``write(packed)`` queues packed commands on ``conn`` in call order, without waiting.
    On the fast path it writes to the stream at once (an error raises); otherwise one task
    sends them with ``send_packed_command`` and reports a failure to ``on_error``."""
    streams = _streams(conn)
    if streams is not None:
        return streams[1].writelines
    return _QueuedWriter(conn, on_error).write


class _QueuedWriter:
    """Writes through redis-py's public ``send_packed_command``, in order, from one task."""

    def __init__(self, conn: Any, on_error: Callable[[BaseException], None]) -> None:
        self._conn = conn
        self._on_error = on_error
        self._queue: deque[list[bytes]] = deque()
        self._task: asyncio.Task[None] | None = None

    def write(self, packed: list[bytes]) -> None:
        self._queue.append(packed)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._queue:
                packed = self._queue.popleft()
                if not self._conn.is_connected:  # dropped: never let redis-py reopen it
                    raise RedisConnectionError("the connection was closed")
                await self._conn.send_packed_command(packed, check_health=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._queue.clear()
            with contextlib.suppress(Exception):
                self._on_error(exc)
        finally:
            self._task = None
