"""QueryRunner: a waiting query its caller gave up on is dropped, never answered."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from jeeves_control_tower.ipc.adapters.responder import QueryRunner
from jeeves_control_tower.testing import eventually


async def test_a_dropped_waiting_query_is_never_answered() -> None:
    gate = asyncio.Event()
    answered: list[str] = []
    tasks: list[asyncio.Task[Any]] = []

    async def answer(data: bytes, reply_to: str, message_type: str) -> None:
        await gate.wait()
        answered.append(reply_to)

    def spawn(coro: Coroutine[Any, Any, Any]) -> None:
        tasks.append(asyncio.get_running_loop().create_task(coro))

    runner = QueryRunner(answer, spawn, max_concurrency=1, pending=10, closing=lambda: False)
    for rid in ("1", "2", "3"):
        assert runner.offer(b"{}", rid, "Q")
    assert runner.waiting == 2
    assert runner.drop("2") and not runner.drop("2") and not runner.drop("1")  # "1" runs
    assert runner.waiting == 1
    gate.set()
    await eventually(lambda: len(answered) == 2)
    await asyncio.gather(*tasks)
    assert answered == ["1", "3"]
