"""How the direct route tells a message probe of each ending (see ``MessageProbe``).

A probe may offer ``ended_ok(pattern, direction, system)``: the bus then tells it of a
local message that ended "ok" through the function it returned, with four arguments, and
of every other ending through ``message``. A probe without it hears every ending through
``message``, with the same arguments either way. Neither a raising ``ended_ok`` nor a
raising ``ok`` function reaches the caller."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jeeves_control_tower.ipc import InMemoryCommBus, MiddlewareContext, NoHandlerError
from tests.helpers import ListLogger


class Ev:
    category = "event"


class Cmd:
    category = "command"


class Ask:
    category = "query"


def short(handlers: Any) -> tuple[str, ...]:
    """The handlers' names (entries with a ``name``, or names) without their module."""
    names = (h if h.__class__ is str else h.name for h in handlers)
    return tuple(name.rsplit(".", 1)[-1] for name in names)


class Probe:
    """Records ``message`` calls as ``(pattern, outcome, message_type, names, error?)``."""

    def __init__(self) -> None:
        self.inflight: dict[str, int] = {}
        self.calls: list[tuple[Any, ...]] = []

    def message(
        self,
        pattern: str,
        direction: str,
        system: str,
        message_type: str,
        started: float,
        outcome: str,
        handlers: Any,
        error: Any,
        trace_id: int | None,
        message: Any,
    ) -> None:
        assert direction == "local" and system == "jeeves.commbus" and trace_id is None
        assert isinstance(started, float)
        names = short(handlers)
        self.calls.append((pattern, outcome, message_type, names, error is not None))
        self.inflight[pattern] -= 1


class OkProbe(Probe):
    """Also offers ``ended_ok``: ok endings recorded with ``"ended_ok"`` first."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, str, str]] = []

    def ended_ok(self, pattern: str, direction: str, system: str) -> Any:
        self.asked.append((pattern, direction, system))

        def ok(message_type: str, started: float, handlers: Any, message: Any) -> None:
            assert handlers.__class__ is tuple and isinstance(started, float)
            names = short(handlers)
            self.calls.append(("ended_ok", pattern, message_type, names, message.__class__))
            self.inflight[pattern] -= 1

        return ok


def wire(bus: InMemoryCommBus) -> None:
    async def sub_async(e: Any) -> None:
        await asyncio.sleep(0)

    def sub_sync(e: Any) -> None:
        return None

    async def command(c: Any) -> None:
        if getattr(c, "fail", False):
            raise ValueError("no")

    def ask(q: Any) -> int:
        if getattr(q, "fail", False):
            raise ValueError("no")
        return 7

    bus.subscribe("Ev", sub_async)
    bus.subscribe("Two", sub_sync)
    bus.subscribe("Two", sub_async)
    bus.register_handler("Cmd", command)
    bus.register_handler("Ask", ask)


class Two:
    category = "event"


async def run_all(bus: InMemoryCommBus) -> None:
    failing_cmd, failing_ask = Cmd(), Ask()
    failing_cmd.fail = failing_ask.fail = True  # type: ignore[attr-defined]
    await bus.publish(Ev())
    await bus.publish(Two())
    await bus.send(Cmd())
    await bus.send(failing_cmd)
    assert await bus.query(Ask()) == 7
    with pytest.raises(ValueError):
        await bus.query(failing_ask)


async def test_without_ended_ok_every_ending_goes_to_message() -> None:
    probe = Probe()
    bus = InMemoryCommBus(instrument=False)
    bus.set_message_probe(probe)
    wire(bus)
    await run_all(bus)
    assert probe.calls == [
        ("publish", "ok", "Ev", ("sub_async",), False),
        ("publish", "ok", "Two", ("sub_sync", "sub_async"), False),
        ("send", "ok", "Cmd", ("command",), False),
        ("send", "error", "Cmd", ("command",), True),
        ("query", "ok", "Ask", ("ask",), False),
        ("query", "error", "Ask", ("ask",), True),
    ]
    assert probe.inflight == {"publish": 0, "send": 0, "query": 0}


async def test_ended_ok_is_asked_once_per_route_and_hears_the_ok_endings() -> None:
    probe = OkProbe()
    bus = InMemoryCommBus(instrument=False)
    bus.set_message_probe(probe)
    asked = sorted(probe.asked)
    wire(bus)  # registrations recompile nothing: asked once per route
    await run_all(bus)
    await run_all(bus)
    assert (
        sorted(probe.asked)
        == asked
        == [
            ("publish", "local", "jeeves.commbus"),
            ("query", "local", "jeeves.commbus"),
            ("send", "local", "jeeves.commbus"),
        ]
    )
    once = [
        ("ended_ok", "publish", "Ev", ("sub_async",), Ev),
        ("ended_ok", "publish", "Two", ("sub_sync", "sub_async"), Two),
        ("ended_ok", "send", "Cmd", ("command",), Cmd),
        ("send", "error", "Cmd", ("command",), True),
        ("ended_ok", "query", "Ask", ("ask",), Ask),
        ("query", "error", "Ask", ("ask",), True),
    ]
    assert probe.calls == once + once
    assert probe.inflight == {"publish": 0, "send": 0, "query": 0}


async def test_a_raising_ended_ok_is_logged_and_message_hears_everything() -> None:
    class Broken(Probe):
        def ended_ok(self, pattern: str, direction: str, system: str) -> Any:
            raise RuntimeError("cannot")

    logger, probe = ListLogger(), Broken()
    bus = InMemoryCommBus(logger=logger, instrument=False)
    bus.set_message_probe(probe)
    assert logger.messages("error").count("message_probe_failed") == 3  # one per route
    wire(bus)
    await run_all(bus)
    assert [c[:2] for c in probe.calls] == [
        ("publish", "ok"), ("publish", "ok"), ("send", "ok"), ("send", "error"),
        ("query", "ok"), ("query", "error"),
    ]  # fmt: skip


async def test_a_raising_ok_function_is_logged_not_raised() -> None:
    class Raising(OkProbe):
        def ended_ok(self, pattern: str, direction: str, system: str) -> Any:
            def ok(*args: Any) -> None:
                raise RuntimeError("broken probe")

            return ok

    logger, probe = ListLogger(), Raising()
    bus = InMemoryCommBus(logger=logger, instrument=False)
    bus.set_message_probe(probe)
    wire(bus)
    await bus.publish(Ev())
    await bus.publish(Two())
    await bus.send(Cmd())
    assert await bus.query(Ask()) == 7
    assert logger.messages("error") == ["message_probe_failed"] * 4


async def test_every_query_ending_on_the_direct_route() -> None:
    """The probed query route, handler by handler: what the caller gets, what the probe
    hears (the async case is written out there: it must end as the unprobed one)."""
    probe = OkProbe()
    bus = InMemoryCommBus(instrument=False, query_timeout=5.0)
    bus.set_message_probe(probe)
    loop = asyncio.get_running_loop()
    made: list[Any] = []

    async def later() -> int:
        return 1

    async def coroutine_value(q: Any) -> Any:
        made.append(later())
        return made[-1]

    async def suspends(q: Any) -> int:
        await asyncio.sleep(0)
        return 2

    async def too_slow(q: Any) -> int:
        await asyncio.sleep(1)
        return 3

    async def fails_at_once(q: Any) -> int:
        raise KeyError("k")

    async def fails_later(q: Any) -> int:
        await asyncio.sleep(0)
        raise KeyError("k")

    def future(q: Any) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = loop.create_future()
        loop.call_soon(fut.set_result, 4)
        return fut

    for name, handler in (
        ("Value", coroutine_value), ("Later", suspends), ("Slow", too_slow),
        ("Fails", fails_at_once), ("FailsLater", fails_later), ("Future", future),
    ):  # fmt: skip
        bus.register_handler(name, handler)

    def typed(name: str) -> Any:
        return type(name, (), {"category": "query"})()

    try:
        assert await bus.query(typed("Value")) is made[0]
    finally:
        made[0].close()
    assert await bus.query(typed("Later")) == 2
    with pytest.raises(TimeoutError):
        await bus.query(typed("Slow"), timeout=0.01)
    with pytest.raises(KeyError):
        await bus.query(typed("Fails"))
    with pytest.raises(KeyError):
        await bus.query(typed("FailsLater"))
    assert await bus.query(typed("Future")) == 4
    with pytest.raises(Exception, match="no handler"):
        await bus.query(typed("Nobody"))
    waiting = asyncio.ensure_future(bus.query(typed("Slow")))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert [c[:4] for c in probe.calls] == [
        ("ended_ok", "query", "Value", ("coroutine_value",)),
        ("ended_ok", "query", "Later", ("suspends",)),
        ("query", "timeout", "Slow", ("too_slow",)),
        ("query", "error", "Fails", ("fails_at_once",)),
        ("query", "error", "FailsLater", ("fails_later",)),
        ("ended_ok", "query", "Future", ("future",)),
        ("query", "no_handler", "Nobody", ()),
        ("query", "cancelled", "Slow", ("too_slow",)),
    ]
    assert probe.inflight == {"query": 0}


class Passing:
    """A middleware that changes nothing: the bus's messages take the chain route."""

    def before(self, ctx: MiddlewareContext, message: Any) -> Any:
        return message

    def after(self, ctx: MiddlewareContext, message: Any, result: Any, error: Any) -> Any:
        return result


class AnyProbe(Probe):
    """:class:`Probe` for either route (the chain's may tell a trace id)."""

    def message(self, pattern: str, direction: str, system: str, *rest: Any) -> None:
        message_type, _, outcome, handlers, error = rest[:5]
        self.calls.append((pattern, outcome, message_type, short(handlers), error is not None))
        self.inflight[pattern] -= 1


@pytest.mark.parametrize("chained", [False, True], ids=["direct", "chain"])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_a_handler_raising_no_handler_error_ended_in_error(
    chained: bool, is_async: bool
) -> None:
    """A query whose handler ran and raised NoHandlerError (its own, or a nested query's)
    ended "error", told with the handler, on either route: "no_handler" is for a query
    that found no handler."""
    bus = InMemoryCommBus(instrument=False)
    if chained:
        bus.add_middleware(Passing())
    probe = AnyProbe()
    bus.set_message_probe(probe)

    async def outer_async(q: Any) -> Any:
        return await bus.query(type("Missing", (), {"category": "query"})())

    def outer_sync(q: Any) -> Any:
        raise NoHandlerError("raised by the handler itself")

    bus.register_handler("Outer", outer_async if is_async else outer_sync)
    with pytest.raises(NoHandlerError):
        await bus.query(type("Outer", (), {"category": "query"})())
    name = "outer_async" if is_async else "outer_sync"
    assert probe.calls[-1] == ("query", "error", "Outer", (name,), True)
    if is_async:
        assert probe.calls[0][:4] == ("query", "no_handler", "Missing", ())
    assert probe.inflight == {"query": 0}
