"""The eager runner must behave exactly like awaiting the coroutine."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from jeeves_control_tower.ipc.bus.eager import Resume, is_async_callable, start, start_in


async def test_non_suspending_coroutine_finishes_inline() -> None:
    async def h(x: int) -> int:
        return x + 1

    assert start(h, True, 1) == 2


async def test_suspending_coroutine_returns_resume() -> None:
    async def h(x: int) -> int:
        await asyncio.sleep(0)
        await asyncio.sleep(0.001)
        return x * 2

    r = start(h, True, 4)
    assert isinstance(r, Resume)
    assert await r == 8
    task_r = start(h, True, 5)
    assert await asyncio.ensure_future(_await(task_r)) == 10


async def _await(r: Any) -> Any:
    return await r


async def test_errors_before_and_after_suspension() -> None:
    async def early(_: Any) -> None:
        raise KeyError("early")

    async def late(_: Any) -> None:
        await asyncio.sleep(0)
        raise KeyError("late")

    with pytest.raises(KeyError, match="early"):
        start(early, True, None)
    r = start(late, True, None)
    with pytest.raises(KeyError, match="late"):
        await r


async def test_cancellation_is_thrown_into_the_coroutine() -> None:
    seen: list[str] = []

    async def h(_: Any) -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    task = asyncio.ensure_future(_await(start(h, True, None)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]


async def test_start_in_runs_every_step_in_the_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("v", default="outer")
    seen: list[str] = []

    async def h(_: Any) -> None:
        seen.append(var.get())
        await asyncio.sleep(0)
        seen.append(var.get())

    ctx = contextvars.copy_context()
    ctx.run(var.set, "inner")
    r = start_in(ctx, h, True, None)
    await r
    assert seen == ["inner", "inner"] and var.get() == "outer"


def test_is_async_callable() -> None:
    class C:
        async def __call__(self, x: Any) -> None: ...

    async def f(x: Any) -> None: ...

    assert is_async_callable(C()) and is_async_callable(f)
    assert not is_async_callable(lambda x: x)


async def test_a_class_whose_instances_are_async_callable_is_a_plain_handler() -> None:
    """Calling the class makes an instance (its ``__init__`` runs), not a
    coroutine; taken for an async handler it failed with AttributeError (no ``send``)."""
    from jeeves_control_tower.ipc import InMemoryCommBus

    class Made:
        def __init__(self, query: Any) -> None:
            self.query = query

        async def __call__(self) -> None: ...

    assert not is_async_callable(Made)
    for instrument in (False, True):
        bus = InMemoryCommBus(instrument=instrument)
        bus.register_handler("GetState", Made)
        made = await bus.query(type("GetState", (), {})())
        assert isinstance(made, Made)
