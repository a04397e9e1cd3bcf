"""A small RESP2 reply reader for the two hot connections (writes' replies, Pub/Sub).

redis-py's pure-Python parser reads every line and bulk string with its own stream call;
this one reads 64 KiB at a time and slices replies out of the buffer, several times
cheaper per message. It takes over a connection's stream after redis-py connected it
(handshake, AUTH, SELECT done, nothing half-read) and is the only reader from then on.
Error replies are returned as :class:`ResponseError` instances (``NoScriptError`` for
``NOSCRIPT``), never raised, so the caller can match them to a command.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

__all__ = ["RespReader", "make_reader"]


class _Incomplete(Exception):
    pass


_INCOMPLETE = _Incomplete()
_CHUNK = 1 << 16


def _parse(buf: bytes, pos: int) -> tuple[Any, int]:
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _INCOMPLETE
    kind = buf[pos]
    if kind == 36:  # $ bulk string
        n = int(buf[pos + 1 : end])
        if n < 0:
            return None, end + 2
        stop = end + 2 + n
        if stop + 2 > len(buf):
            raise _INCOMPLETE
        return buf[end + 2 : stop], stop + 2
    if kind == 42:  # * array
        n = int(buf[pos + 1 : end])
        if n < 0:
            return None, end + 2
        pos = end + 2
        items = []
        for _ in range(n):
            item, pos = _parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == 58:  # : integer
        return int(buf[pos + 1 : end]), end + 2
    if kind == 43:  # + simple string
        return buf[pos + 1 : end], end + 2
    if kind == 45:  # - error
        text = buf[pos + 1 : end].decode("utf-8", "replace")
        if text.startswith("NOSCRIPT"):
            return NoScriptError(text), end + 2
        return ResponseError(text), end + 2
    raise RedisConnectionError(f"protocol error: unexpected RESP type byte {kind!r}")


class RespReader:
    """``await read()`` returns the next reply; ``ConnectionError`` at end of stream."""

    __slots__ = ("_buf", "_pos", "_stream")

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._buf = b""
        self._pos = 0

    async def read(self) -> Any:
        while True:
            if self._pos < len(self._buf):
                try:
                    value, self._pos = _parse(self._buf, self._pos)
                    return value
                except _Incomplete:
                    pass
            chunk = await self._stream.read(_CHUNK)
            if not chunk:
                raise RedisConnectionError("redis closed the connection")
            self._buf = self._buf[self._pos :] + chunk
            self._pos = 0


class _Fallback:
    """redis-py's own parser, for a connection whose stream is not reachable."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def read(self) -> Any:
        try:
            return await self._conn.read_response()
        except ResponseError as exc:
            return exc


def make_reader(conn: Any) -> RespReader | _Fallback:
    """The fast reader on ``conn``'s stream (after ``connect()``), if it can get at it."""
    stream = getattr(conn, "_reader", None)
    if (
        stream is None
        or not hasattr(stream, "read")
        or getattr(conn, "protocol", 2) not in (2, "2")
    ):
        return _Fallback(conn)
    return RespReader(stream)
