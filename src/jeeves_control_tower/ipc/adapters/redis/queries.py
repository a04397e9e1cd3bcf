"""Query over Redis: a request list per query type, a reply channel per process.

Requester: one script, atomically, checks that some process answers the type (the
number of subscribers of the type's *presence* channel, ``PUBSUB NUMSUB``), and if so
``LPUSH``es the frame onto the type's request list; 0 answerers means
:class:`NoHandlerError` at once. The reply arrives on this process's reply channel as
``corr + b" " + reply frame`` and resolves the waiting future (``dict[corr, Future]``).

Responder: each process that handles the type subscribes to its presence channel and
``BRPOP``s the request list, so each query is answered by exactly one process. A
responder that dies holding a query loses it: the requester times out (queries are not
durable). Requests that waited in the list past their ttl are dropped unanswered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from ....types import LoggerProtocol
from .conn import UNREACHABLE, DedicatedConnection

__all__ = ["REQUEST_SCRIPT", "QueryResponder"]

REQUEST_SCRIPT = """
if redis.call('PUBSUB', 'NUMSUB', KEYS[2])[2] == 0 then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

Answer = Callable[[bytes], Coroutine[Any, Any, None]]


class QueryResponder:
    """Pops the request list of one query type and answers concurrently (at most
    ``slots`` queries of all types in flight per process: the semaphore is shared)."""

    def __init__(
        self,
        client: Any,
        key: str,
        answer: Answer,
        slots: asyncio.Semaphore,
        spawn: Callable[[Coroutine[Any, Any, Any]], Any],
        logger: LoggerProtocol,
        block_seconds: float = 5.0,
    ) -> None:
        self._conn = DedicatedConnection(client)
        self._key = key
        self._answer = answer
        self._slots = slots
        self._spawn = spawn
        self._logger = logger
        self._block = block_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._conn.close()

    async def _run(self) -> None:
        backoff = 0.02
        while True:
            await self._slots.acquire()
            handed_over = False
            try:
                item = await self._conn.call("BRPOP", self._key, self._block)
                backoff = 0.02
                if item:
                    # Its own task: the handler's asyncio.timeout must bind to the task
                    # that runs it, and one slow query must not hold up the next.
                    self._spawn(self._answer_then_release(item[1]))
                    handed_over = True
            except UNREACHABLE as exc:
                self._logger.debug("redis_query_pop_failed", error_type=type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
            finally:
                if not handed_over:
                    self._slots.release()

    async def _answer_then_release(self, data: bytes) -> None:
        try:
            await self._answer(data)
        except Exception as exc:
            self._logger.error("redis_query_answer_failed", error=str(exc))
        finally:
            self._slots.release()
