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
``send_packed_command`` (:func:`make_reader`, :func:`make_writer`, :mod:`.fallback`):
slower, still correct.

Contract of ``await reader.read()``: the next reply; an error reply is returned as a
:class:`ResponseError` value (``NoScriptError`` for ``NOSCRIPT``), never raised, so the
caller can match it to its command. End of stream raises ``ConnectionError``; a reply that
would need more than ``max_reply`` bytes buffered raises :class:`ReplyTooLarge` (a
``ConnectionError``) without reading it further: the caller drops the connection, which
discards the rest. The fast reader therefore never holds more than about ``max_reply`` +
64 KiB of one reply; the fallback (redis-py's parsing) reads a reply whole, whatever its
size.

:class:`SkippingReader` (``make_reader(..., skip_oversized=True)``, for the Pub/Sub
connection) instead skips such a reply in the stream and returns :class:`Skipped` in its
place: it knows where the pending reply began (it adds up the encoded size of every reply
it returned, exact for the bulk strings, integers, nils and arrays a Pub/Sub connection
receives), keeps the first 64 KiB of it, parses its RESP header itself, discards the rest
of its bytes as they arrive without holding them, and goes on with a fresh hiredis parser
from the next reply. Memory stays within ``max_reply`` + about 256 KiB. When the start is
not known exactly (after a reply of another kind, until the stream is next read up to a
reply boundary) or the structure to skip lies beyond those 64 KiB, it raises
:class:`ReplyTooLarge` as above.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from .fallback import FallbackReader, QueuedWriter

__all__ = [
    "FAST_PATH",
    "HiredisReader",
    "Reader",
    "ReplyTooLarge",
    "Skipped",
    "SkippingReader",
    "Stream",
    "fast_path_available",
    "make_reader",
    "make_writer",
]

_CHUNK = 1 << 16
#: How much of a pending reply's beginning :class:`SkippingReader` keeps (its header).
_HEAD = 1 << 16
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


class Skipped:
    """In place of a reply over ``max_reply`` bytes that :class:`SkippingReader` skipped
    unread; ``size`` is its length on the wire."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __repr__(self) -> str:
        return f"Skipped({self.size})"


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


def _encoded_size(reply: Any) -> int:
    """The length of ``reply`` as Redis encodes it in RESP2, or -1 when that is not known
    exactly (an error reply; a simple string would be sized as a bulk string: a Pub/Sub
    connection receives none)."""
    cls = reply.__class__
    if cls is list:
        size = len(str(len(reply))) + 3
        for item in reply:
            if item.__class__ is bytes:  # "$<n>\r\n<n bytes>\r\n" (the ladder saves a str())
                n = len(item)
                size += n + (6 if n < 10 else 7 if n < 100 else 8 if n < 1000 else len(str(n)) + 5)
            else:
                n = _encoded_size(item)
                if n < 0:
                    return -1
                size += n
        return size
    if cls is bytes:
        return len(reply) + len(str(len(reply))) + 5
    if cls is int:
        return len(str(reply)) + 3
    if reply is None:
        return 5
    return -1


class SkippingReader:
    """Like :class:`HiredisReader`, but a reply over ``max_reply`` bytes is skipped in the
    stream and :class:`Skipped` returned in its place (see the module docstring)."""

    __slots__ = (
        "_fed",
        "_gets",
        "_head",
        "_head_at",
        "_head_len",
        "_known",
        "_last",
        "_last_at",
        "_max",
        "_parser",
        "_stream",
        "_used",
    )

    def __init__(self, stream: Stream, max_reply: int) -> None:
        self._stream = stream
        self._max = max_reply
        self._restart()

    def _restart(self) -> None:
        """A fresh parser at a reply boundary; offsets count from there."""
        import hiredis

        self._parser = hiredis.Reader(
            protocolError=RedisConnectionError,
            replyError=_reply_error,
            notEnoughData=False,
        )
        self._gets = self._parser.gets
        self._fed = 0  # bytes fed to the parser
        self._used = 0  # where the next reply begins: the replies returned, added up
        self._known = True  # whether _used is exact
        self._head: list[bytes] = []  # contiguous chunks from _head_at, holding _used
        self._head_at = 0
        self._head_len = 0
        self._last = b""  # the chunk fed last, from _last_at
        self._last_at = 0

    async def read(self) -> Any:
        reply = self._gets()
        while reply is False:
            if self._parser.len() > self._max:
                return await self._skip()
            chunk = await self._stream.read(_CHUNK)
            if not chunk:
                raise RedisConnectionError("redis closed the connection")
            self._feed(chunk)
            reply = self._gets()
        size = _encoded_size(reply)
        if size < 0:
            self._known = False
        else:
            self._used += size
        if not self._parser.has_data():  # a reply boundary at the end of what was fed
            self._used = self._fed
            self._known = True
        return reply

    def _feed(self, chunk: bytes) -> None:
        """Feed ``chunk``, keeping the first ``_HEAD`` bytes (at least) of the pending
        reply, which begins at ``_used``: in the chunk fed last or this one when a reply
        was returned since the last feed (a reply completes in the chunk fed last), else
        where it began before."""
        if self._used >= self._fed:
            self._head, self._head_at, self._head_len = [], self._fed, 0
        elif self._used >= self._last_at:
            self._head, self._head_at, self._head_len = [self._last], self._last_at, len(self._last)
        if self._head_at + self._head_len - self._used < _HEAD:
            self._head.append(chunk)
            self._head_len += len(chunk)
        self._last, self._last_at = chunk, self._fed
        self._fed += len(chunk)
        self._parser.feed(chunk)

    async def _skip(self) -> Skipped:
        """Skip the pending reply (over ``max_reply``): read its structure from its kept
        beginning and the stream, discard its bulk strings' bytes as they arrive, and
        restart the parser on what follows it."""
        if not self._known:
            raise ReplyTooLarge(f"a reply exceeds {self._max} bytes (its start is not known)")
        start = self._used
        kept = b"".join(self._head)[start - self._head_at :]
        cursor = _Cursor(self._stream, kept, start, self._fed)
        self._restart()  # drop the parser's buffer (up to max_reply) at once
        todo = 1
        while todo:
            line = await cursor.line()
            todo -= 1
            kind = line[:1]
            if kind == b"*" or kind == b"$":
                try:
                    n = int(line[1:])
                except ValueError:
                    raise RedisConnectionError("Protocol error: a bad length") from None
                if kind == b"*":
                    todo += max(n, 0)
                elif n >= 0:
                    await cursor.skip(n + 2)
            elif kind not in (b"+", b"-", b":"):
                raise RedisConnectionError(f"Protocol error: type byte {kind!r}")
        rest = cursor.rest()
        if rest:
            self._feed(rest)
        return Skipped(cursor.pos - start)


class _Cursor:
    """The bytes of one reply from offset ``pos``: ``kept`` first, then those up to
    offset ``fed`` that are no longer at hand (only skippable), then ``stream``."""

    __slots__ = ("_buf", "_fed", "_stream", "pos")

    def __init__(self, stream: Stream, kept: bytes, pos: int, fed: int) -> None:
        self._stream = stream
        self._buf = kept
        self.pos = pos
        self._fed = fed

    async def _read(self) -> bytes:
        chunk = await self._stream.read(_CHUNK)
        if not chunk:
            raise RedisConnectionError("redis closed the connection")
        self._fed += len(chunk)
        return chunk

    async def line(self) -> bytes:
        """The next line, without its CRLF."""
        while True:
            end = self._buf.find(b"\r\n")
            if end >= 0:
                line = self._buf[:end]
                self._buf = self._buf[end + 2 :]
                self.pos += end + 2
                return line
            if len(self._buf) > _HEAD:
                raise RedisConnectionError("Protocol error: a line over 64 KiB")
            if self.pos + len(self._buf) < self._fed:
                raise ReplyTooLarge("a reply's structure lies beyond its first 64 KiB")
            self._buf += await self._read()

    async def skip(self, n: int) -> None:
        """Discard the next ``n`` bytes, holding none of them."""
        while n > len(self._buf):
            n -= len(self._buf)
            self.pos += len(self._buf)
            self._buf = b""
            gap = min(self._fed - self.pos, n)  # already read, no longer at hand
            self.pos += gap
            n -= gap
            if n:
                self._buf = await self._read()
        self._buf = self._buf[n:]
        self.pos += n

    def rest(self) -> bytes:
        """What was read beyond the reply."""
        return self._buf


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


def make_reader(conn: Any, max_reply: int, *, skip_oversized: bool = False) -> Reader:
    """The reader of ``conn``'s replies (after ``connect()``): hiredis on its stream when
    :data:`FAST_PATH` holds and the stream is there (a :class:`SkippingReader` with
    ``skip_oversized``), redis-py's parser otherwise."""
    streams = _streams(conn)
    if streams is None:
        return FallbackReader(conn)
    if skip_oversized:
        return SkippingReader(streams[0], max_reply)
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
    return QueuedWriter(conn, on_error).write
