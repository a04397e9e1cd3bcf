"""Reading and writing a connection through redis-py's public API only: the path used
when the raw stream one (:mod:`.resp`) is not available. Slower, still correct."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

__all__ = ["FallbackReader", "QueuedWriter"]


class FallbackReader:
    """redis-py's own parser (unbounded: it reads a reply whole). An error reply is
    returned as a :class:`ResponseError` value, never raised."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def read(self) -> Any:
        try:
            return await self._conn.read_response()
        except ResponseError as exc:
            return exc


class QueuedWriter:
    """Writes through redis-py's public ``send_packed_command``, in call order, from one
    task; a failure drops what is queued and is reported to ``on_error`` (which must not
    raise; if it does, that is swallowed)."""

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
