"""Consumption: what a transport consumes on the broker, kept in step with what is wanted."""

from __future__ import annotations

import asyncio

from jeeves_control_tower.ipc.adapters.consumption import Consumption
from jeeves_control_tower.testing import eventually
from tests.helpers import ListLogger

Key = tuple[str, str]


class Broker:
    """Records the start/stop calls; ``fail`` makes them raise, ``gate`` holds a start."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.fail: set[tuple[str, str, str]] = set()
        self.gate: asyncio.Event | None = None

    async def start(self, pattern: str, message_type: str) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self._call("start", pattern, message_type)

    async def stop(self, pattern: str, message_type: str) -> None:
        self._call("stop", pattern, message_type)

    def _call(self, what: str, pattern: str, message_type: str) -> None:
        if (what, pattern, message_type) in self.fail:
            raise ConnectionError(f"{what} {pattern} {message_type} refused")
        self.calls.append((what, pattern, message_type))


def consumption(want: set[Key]) -> tuple[Consumption, Broker, ListLogger]:
    broker, logger = Broker(), ListLogger()
    return Consumption(lambda: set(want), broker.start, broker.stop, logger), broker, logger


async def test_refresh_starts_what_is_wanted_and_stops_what_is_not() -> None:
    want = {("publish", "B"), ("publish", "A")}
    c, broker, _ = consumption(want)
    await c.refresh()
    assert broker.calls == [("start", "publish", "A"), ("start", "publish", "B")]
    want.discard(("publish", "A"))
    want.add(("query", "Q"))
    broker.calls.clear()
    await c.refresh()
    assert broker.calls == [("stop", "publish", "A"), ("start", "query", "Q")]
    broker.calls.clear()
    await c.refresh()  # in step already: nothing to do
    assert broker.calls == []


async def test_a_change_during_a_refresh_is_caught_up_before_sync_returns() -> None:
    want: set[Key] = {("publish", "A")}
    c, broker, _ = consumption(want)
    broker.gate = asyncio.Event()
    c.changed()
    await asyncio.sleep(0)  # the background refresh is waiting in start("publish", "A")
    want.add(("send", "C"))
    c.changed()  # one refresh at a time: this one goes round again
    broker.gate.set()
    await c.sync()
    assert broker.calls == [("start", "publish", "A"), ("start", "send", "C")]


async def test_a_failed_background_refresh_is_logged_and_retried() -> None:
    c, broker, logger = consumption({("publish", "A")})
    broker.fail.add(("start", "publish", "A"))
    c.changed()
    await eventually(lambda: "transport_refresh_failed" in logger.messages("error"))
    broker.fail.clear()
    await eventually(lambda: broker.calls == [("start", "publish", "A")])
    c.close()


async def test_close_stops_refreshing_and_stop_all_stops_everything() -> None:
    want = {("publish", "A"), ("send", "B"), ("query", "C")}
    c, broker, logger = consumption(want)
    await c.refresh()
    broker.calls.clear()
    c.close()
    want.add(("publish", "D"))
    c.changed()
    await c.refresh()
    assert broker.calls == []  # closed: nothing started any more
    broker.fail.add(("stop", "publish", "A"))
    await c.stop_all()  # a failing stop is logged; the others still stop
    assert broker.calls == [("stop", "query", "C"), ("stop", "send", "B")]
    assert logger.messages("warning") == ["transport_stop_failed"]
    broker.calls.clear()
    await c.stop_all()
    assert broker.calls == []
