"""Wait for a condition that a broker makes true asynchronously."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["eventually"]


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Return once ``check()`` holds; ``AssertionError`` if it still does not after
    ``timeout`` seconds (checked every 10 ms)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
