"""Carry: a suspended coroutine goes on from its futures' callbacks as a task would."""

from __future__ import annotations

import asyncio

import pytest

from jeeves_control_tower.ipc.adapters.grpc.carry import Carry
from jeeves_control_tower.ipc.bus.eager import Resume, start


def _carried(coro_fn: object, arg: object) -> tuple[Carry, asyncio.Future[BaseException | None]]:
    rest = start(coro_fn, True, arg)  # type: ignore[arg-type]
    assert isinstance(rest, Resume)
    ended: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    return Carry(rest, ended.set_result), ended


async def test_runs_to_the_end_through_futures_and_bare_yields() -> None:
    loop = asyncio.get_running_loop()
    seen: list[object] = []
    gates = [loop.create_future() for _ in range(3)]

    async def body(_: None) -> None:
        for gate in gates:
            seen.append(await gate)
            await asyncio.sleep(0)
        seen.append("end")

    carry, ended = _carried(body, None)
    for i, gate in enumerate(gates):
        await asyncio.sleep(0)
        assert not carry.finished
        gate.set_result(i)
    assert await asyncio.wait_for(ended, 1) is None
    assert seen == [0, 1, 2, "end"] and carry.finished
    assert asyncio.current_task() is not None


async def test_an_exception_in_the_awaited_future_reaches_the_coroutine_and_done() -> None:
    gate = asyncio.get_running_loop().create_future()
    caught: list[BaseException] = []

    async def body(_: None) -> None:
        try:
            await gate
        except ValueError as exc:
            caught.append(exc)
            raise RuntimeError("after") from exc

    _, ended = _carried(body, None)
    gate.set_exception(ValueError("broken"))
    error = await asyncio.wait_for(ended, 1)
    assert isinstance(error, RuntimeError) and isinstance(caught[0], ValueError)


async def test_cancel_cancels_the_awaited_future_like_task_cancel() -> None:
    gate = asyncio.get_running_loop().create_future()
    cleaned: list[bool] = []

    async def body(_: None) -> None:
        try:
            await gate
        finally:
            cleaned.append(True)

    carry, ended = _carried(body, None)
    carry.cancel()
    assert gate.cancelled()
    error = await asyncio.wait_for(ended, 1)
    assert isinstance(error, asyncio.CancelledError) and cleaned == [True]
    carry.cancel()  # once finished: nothing to do


async def test_waiting_on_something_not_a_future_is_an_error_in_the_coroutine() -> None:
    class Odd:
        def __await__(self):  # type: ignore[no-untyped-def]
            yield "not a future"

    async def body(_: None) -> None:
        await Odd()

    rest = start(body, True, None)
    assert isinstance(rest, Resume)
    got: list[BaseException | None] = []
    Carry(rest, got.append)
    assert isinstance(got[0], RuntimeError)


@pytest.mark.parametrize("value", [1, "x"])
async def test_finishing_without_suspending_again_reports_none(value: object) -> None:
    gate = asyncio.get_running_loop().create_future()

    async def body(v: object) -> object:
        await gate
        return v

    _, ended = _carried(body, value)
    gate.set_result(None)
    assert await asyncio.wait_for(ended, 1) is None
