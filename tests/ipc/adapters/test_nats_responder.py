"""QueryRunner: each query in a task, at most max_concurrency at once, the rest in order."""

from __future__ import annotations

import asyncio
from typing import Any

from jeeves_control_tower.ipc.adapters.nats.responder import QueryRunner
from jeeves_control_tower.testing.polling import eventually


class Answers:
    def __init__(self) -> None:
        self.started: list[bytes] = []
        self.gate = asyncio.Event()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closing = False

    async def answer(self, data: bytes, reply_to: str, message_type: str) -> None:
        self.started.append(data)
        await self.gate.wait()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        return task


def runner(answers: Answers, *, max_concurrency: int = 2, pending: int = 3) -> QueryRunner:
    return QueryRunner(
        answers.answer,
        answers.spawn,
        max_concurrency=max_concurrency,
        pending=pending,
        closing=lambda: answers.closing,
    )


async def test_queries_beyond_the_cap_wait_in_order_and_beyond_pending_are_refused() -> None:
    answers = Answers()
    queries = runner(answers)
    offered = [queries.offer(bytes([i]), "r", "Ask") for i in range(6)]
    assert offered == [True] * 5 + [False]  # 2 running, 3 waiting, the sixth refused
    assert (queries.running, queries.waiting) == (2, 3)
    await eventually(lambda: answers.started == [b"\x00", b"\x01"])
    answers.gate.set()
    await eventually(lambda: queries.running == 0)
    assert answers.started == [bytes([i]) for i in range(5)]  # arrival order
    assert queries.waiting == 0


async def test_once_closing_the_waiting_queries_are_not_started() -> None:
    answers = Answers()
    queries = runner(answers, max_concurrency=1)
    for i in range(3):
        assert queries.offer(bytes([i]), "r", "Ask")
    await eventually(lambda: answers.started == [b"\x00"])
    answers.closing = True
    answers.gate.set()
    await eventually(lambda: queries.running == 0)
    assert answers.started == [b"\x00"] and queries.waiting == 2
    await asyncio.gather(*answers.tasks)
