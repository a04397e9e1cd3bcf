from __future__ import annotations

import asyncio

import pytest

from jeeves_control_tower.ipc.dispatch.admission import Admission, QueueFull


async def test_fifo_within_rank_and_rank_order() -> None:
    adm = Admission(lambda: 1)
    assert adm.try_acquire() and not adm.try_acquire()
    order: list[str] = []

    async def waiter(name: str, rank: int) -> None:
        await adm.acquire(rank)
        order.append(name)
        adm.release()

    tasks = []
    for name, rank in [("n1", 2), ("l", 3), ("n2", 2), ("r", 0)]:
        tasks.append(asyncio.create_task(waiter(name, rank)))
        await asyncio.sleep(0)
    assert adm.queue_depth == 4
    adm.release()
    await asyncio.gather(*tasks)
    assert order == ["r", "n1", "n2", "l"]
    assert adm.in_use == 0 and adm.queue_depth == 0


async def test_cancel_after_grant_passes_slot_on() -> None:
    adm = Admission(lambda: 1)
    adm.try_acquire()
    first = asyncio.create_task(adm.acquire(2))
    second = asyncio.create_task(adm.acquire(2))
    await asyncio.sleep(0)
    adm.release()  # grants `first`...
    first.cancel()  # ...which is cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await first
    await second
    assert adm.in_use == 1 and adm.queue_depth == 0


async def test_queue_bound_and_close() -> None:
    adm = Admission(lambda: 1, max_queue=1)
    adm.try_acquire()
    waiting = asyncio.create_task(adm.acquire(2))
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await adm.acquire(2)
    adm.close(RuntimeError("gone"))
    with pytest.raises(RuntimeError, match="gone"):
        await waiting
    assert adm.queue_depth == 0


async def test_newcomer_cannot_overtake_queue() -> None:
    adm = Admission(lambda: 1)
    adm.try_acquire()
    queued = asyncio.create_task(adm.acquire(4))
    await asyncio.sleep(0)
    adm.release()  # handed to the queued waiter
    assert not adm.try_acquire()
    await queued
    assert adm.in_use == 1
