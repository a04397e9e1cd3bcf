"""A connection owned by one loop (a blocking reader, say), outside the client's pool.

Blocking commands (``BRPOP``, ``XREADGROUP BLOCK``) hold their connection anyway; taking
and returning a pooled one around each call costs more than the call itself. A
:class:`DedicatedConnection` is made from the client's pool settings (URL, password,
TLS), connects lazily, and after any error or cancellation during a call is dropped and
reconnected on the next call (a half-read reply is never reused).
"""

from __future__ import annotations

import contextlib
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["UNREACHABLE", "DedicatedConnection"]

#: Exceptions meaning "the broker is not there right now" (as opposed to a bad command).
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError, TimeoutError)


class DedicatedConnection:
    """Not shareable: one caller at a time (the loop that owns it)."""

    def __init__(self, client: Any) -> None:
        self._pool = client.connection_pool
        self._conn: Any = None

    async def call(self, *args: Any) -> Any:
        """Send one command and return its raw reply (``ResponseError`` raised)."""
        conn = self._conn
        if conn is None:
            conn = self._conn = self._pool.make_connection()
        try:
            await conn.send_command(*args)
            return await conn.read_response()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to release
                await conn.disconnect()
