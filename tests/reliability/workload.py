"""The workload the property tests share: messages that carry how their handler should
behave, the behaviours themselves, and a middleware that aborts every seventh message."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from jeeves_control_tower.ipc import MiddlewareContext


@dataclass
class Ev:
    n: int
    behaviour: str  # "ok" | "fail" | "slow"
    message_type: str = "Ev"


@dataclass
class Cmd:
    n: int
    behaviour: str
    message_type: str = "Cmd"


@dataclass
class Q:
    n: int
    behaviour: str  # "ok" | "fail" | "slow" | "hang" (times out)
    message_type: str = "Q"


@dataclass
class Orphan:
    """A query nobody handles."""

    n: int
    behaviour: str = "ok"
    message_type: str = "Orphan"


class AbortSevens:
    """Aborts every message whose n is divisible by 7."""

    def before(self, ctx: MiddlewareContext, message: Any) -> Any:
        return None if message.n % 7 == 0 else message

    def after(
        self, ctx: MiddlewareContext, message: Any, result: Any, error: BaseException | None
    ) -> Any:
        return result


async def behave(behaviour: str) -> None:
    """``fail`` raises, ``slow`` suspends 2 ms, ``hang`` 1 s (past any timeout used here)."""
    if behaviour == "fail":
        raise RuntimeError("injected")
    if behaviour == "slow":
        await asyncio.sleep(0.002)
    elif behaviour == "hang":
        await asyncio.sleep(1)
