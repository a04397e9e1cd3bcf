from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from jeeves_control_tower.ipc import (
    InMemoryCommBus,
    MiddlewareContext,
    NoHandlerError,
    QueryAbortedError,
    get_commbus,
    get_message_type,
    reset_commbus,
)
from tests.helpers import ListLogger


@dataclass
class MemoryStored:
    item_id: str
    layer: str = "L1"
    category: str = field(default="event", init=False)


@dataclass
class DoThing:
    n: int = 0
    category: str = field(default="command", init=False)


@dataclass
class GetState:
    key: str = "k"
    category: str = field(default="query", init=False)


@dataclass
class Renamed:
    message_type: str
    category: str = "event"


@pytest.fixture
def log() -> ListLogger:
    return ListLogger()


@pytest.fixture
def lbus(log: ListLogger) -> InMemoryCommBus:
    return InMemoryCommBus(query_timeout=1.0, logger=log, instrument=False)


def test_message_type_rule() -> None:
    assert get_message_type(MemoryStored("1")) == "MemoryStored"
    assert get_message_type(Renamed("Custom")) == "Custom"
    assert get_message_type(Renamed("")) == "Renamed"
    assert get_message_type(Renamed(5)) == "Renamed"  # type: ignore[arg-type]


class TestPublish:
    async def test_sync_and_async_subscribers_take_effect_immediately(
        self, bus: InMemoryCommBus
    ) -> None:
        seen: list[tuple[str, str]] = []
        bus.subscribe("MemoryStored", lambda e: seen.append(("sync", e.item_id)))

        async def on_async(e: MemoryStored) -> None:
            seen.append(("async", e.item_id))

        bus.subscribe("MemoryStored", on_async)
        await bus.publish(MemoryStored("1"))
        assert seen == [("sync", "1"), ("async", "1")]

    async def test_no_subscribers_is_quiet(self, lbus: InMemoryCommBus, log: ListLogger) -> None:
        await lbus.publish(MemoryStored("x"))
        assert log.records == []

    async def test_unsubscribe_is_idempotent_and_exact(self, bus: InMemoryCommBus) -> None:
        seen: list[str] = []

        def handler(e: Any) -> None:
            seen.append(e.item_id)

        first = bus.subscribe("MemoryStored", handler)
        bus.subscribe("MemoryStored", handler)
        first()
        first()
        await bus.publish(MemoryStored("a"))
        assert seen == ["a"]
        assert bus.get_subscribers("MemoryStored") == [handler]

    async def test_subscribers_run_concurrently(self, bus: InMemoryCommBus) -> None:
        a_started, b_started = asyncio.Event(), asyncio.Event()

        async def a(_: Any) -> None:
            a_started.set()
            await asyncio.wait_for(b_started.wait(), 1)

        async def b(_: Any) -> None:
            b_started.set()
            await asyncio.wait_for(a_started.wait(), 1)

        bus.subscribe("MemoryStored", a)
        bus.subscribe("MemoryStored", b)
        await asyncio.wait_for(bus.publish(MemoryStored("x")), 2)

    async def test_failing_subscriber_is_logged_and_isolated(
        self, lbus: InMemoryCommBus, log: ListLogger
    ) -> None:
        seen: list[str] = []

        def bad(_: Any) -> None:
            raise RuntimeError("bad sync")

        async def bad_later(_: Any) -> None:
            await asyncio.sleep(0)
            raise KeyError("bad async")

        async def good(e: Any) -> None:
            await asyncio.sleep(0)
            seen.append(e.item_id)

        for h in (bad, bad_later, good):
            lbus.subscribe("MemoryStored", h)
        await lbus.publish(MemoryStored("ok"))
        assert seen == ["ok"]
        errors = [f for lv, m, f in log.records if m == "subscriber_failed"]
        assert {f["error_type"] for f in errors} == {"RuntimeError", "KeyError"}

    async def test_publish_waits_for_suspending_subscribers(self, bus: InMemoryCommBus) -> None:
        done: list[int] = []

        async def slow(_: Any) -> None:
            for _ in range(3):
                await asyncio.sleep(0)
            done.append(1)

        bus.subscribe("MemoryStored", slow)
        await bus.publish(MemoryStored("x"))
        assert done == [1]

    async def test_thousand_concurrent_publishes(self, bus: InMemoryCommBus) -> None:
        seen: list[str] = []

        async def handler(e: MemoryStored) -> None:
            await asyncio.sleep(0.001)
            seen.append(e.item_id)

        bus.subscribe("MemoryStored", handler)
        bus.subscribe("MemoryStored", lambda e: None)
        await asyncio.gather(*(bus.publish(MemoryStored(str(i))) for i in range(1000)))
        assert sorted(seen, key=int) == [str(i) for i in range(1000)]

    async def test_cancelling_publisher_cancels_subscribers(self, bus: InMemoryCommBus) -> None:
        cancelled: list[str] = []

        def make(name: str) -> Any:
            async def h(_: Any) -> None:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    cancelled.append(name)
                    raise

            return h

        bus.subscribe("MemoryStored", make("a"))
        bus.subscribe("MemoryStored", make("b"))
        task = asyncio.create_task(bus.publish(MemoryStored("x")))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sorted(cancelled) == ["a", "b"]
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []

    async def test_unsubscribe_inside_handler_keeps_current_publish(
        self, bus: InMemoryCommBus
    ) -> None:
        seen: list[str] = []
        unsub: list[Any] = []

        def first(_: Any) -> None:
            seen.append("first")
            unsub[0]()

        def second(_: Any) -> None:
            seen.append("second")

        bus.subscribe("MemoryStored", first)
        unsub.append(bus.subscribe("MemoryStored", second))
        await bus.publish(MemoryStored("x"))
        await bus.publish(MemoryStored("y"))
        assert seen == ["first", "second", "first"]

    async def test_subscribe_validates(self, bus: InMemoryCommBus) -> None:
        with pytest.raises(ValueError, match="event_type"):
            bus.subscribe("", lambda e: None)
        with pytest.raises(TypeError, match="callable"):
            bus.subscribe("X", "nope")  # type: ignore[arg-type]

    async def test_handler_context_vars_after_suspension_are_isolated(
        self, bus: InMemoryCommBus
    ) -> None:
        var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="outer")
        seen: list[str] = []

        async def h(_: Any) -> None:
            await asyncio.sleep(0)
            seen.append(var.get())

        bus.subscribe("MemoryStored", h)
        bus.subscribe("MemoryStored", h)
        var.set("caller")
        await bus.publish(MemoryStored("x"))
        assert seen == ["caller", "caller"]


class TestSend:
    async def test_exactly_one_handler_awaited(self, bus: InMemoryCommBus) -> None:
        done: list[int] = []

        async def h(c: DoThing) -> None:
            await asyncio.sleep(0.001)
            done.append(c.n)

        bus.register_handler("DoThing", h)
        await bus.send(DoThing(7))
        assert done == [7]

    async def test_duplicate_registration_raises(self, bus: InMemoryCommBus) -> None:
        bus.register_handler("DoThing", lambda c: None)
        with pytest.raises(ValueError, match="already registered"):
            bus.register_handler("DoThing", lambda c: None)
        with pytest.raises(TypeError):
            bus.register_handler("Other", 42)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            bus.register_handler("", lambda c: None)

    async def test_errors_logged_not_raised(self, lbus: InMemoryCommBus, log: ListLogger) -> None:
        async def h(_: Any) -> None:
            await asyncio.sleep(0)
            raise RuntimeError("nope")

        lbus.register_handler("DoThing", h)
        await lbus.send(DoThing())
        assert ("error", "command_failed") in [(lv, m) for lv, m, _ in log.records]

    async def test_no_handler_warns(self, lbus: InMemoryCommBus, log: ListLogger) -> None:
        await lbus.send(DoThing())
        assert log.records == [
            ("warning", "no_handler", {"pattern": "send", "message_type": "DoThing"})
        ]

    async def test_hundred_concurrent_sends(self, bus: InMemoryCommBus) -> None:
        got: list[int] = []

        async def h(c: DoThing) -> None:
            await asyncio.sleep(0.001)
            got.append(c.n)

        bus.register_handler("DoThing", h)
        await asyncio.gather(*(bus.send(DoThing(i)) for i in range(100)))
        assert sorted(got) == list(range(100))


class TestQuery:
    async def test_returns_result_sync_and_async(self, bus: InMemoryCommBus) -> None:
        bus.register_handler("GetState", lambda q: {"key": q.key})
        assert await bus.query(GetState("a")) == {"key": "a"}

        async def slow(q: Renamed) -> str:
            await asyncio.sleep(0.001)
            return "slow"

        bus.register_handler("Slow", slow)
        assert await bus.query(Renamed("Slow")) == "slow"

    async def test_no_handler_value_error(self, bus: InMemoryCommBus) -> None:
        with pytest.raises(ValueError, match="no handler"):
            await bus.query(GetState())
        with pytest.raises(NoHandlerError):
            await bus.query(GetState())

    async def test_handler_exception_propagates(self, bus: InMemoryCommBus) -> None:
        async def h(_: Any) -> None:
            await asyncio.sleep(0)
            raise LookupError("missing")

        bus.register_handler("GetState", h)
        with pytest.raises(LookupError, match="missing"):
            await bus.query(GetState())

    async def test_default_timeout_cancels_handler(self) -> None:
        bus = InMemoryCommBus(query_timeout=0.05, instrument=False)
        cancelled = asyncio.Event()

        async def h(_: Any) -> None:
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        bus.register_handler("GetState", h)
        with pytest.raises(asyncio.TimeoutError):
            await bus.query(GetState())
        assert cancelled.is_set()
        with pytest.raises(TimeoutError):
            await bus.query(GetState(), timeout=0.01)

    @pytest.mark.parametrize("bad", [0, -1, float("nan"), "1", True])
    async def test_bad_timeouts(self, bus: InMemoryCommBus, bad: Any) -> None:
        bus.register_handler("GetState", lambda q: 1)
        with pytest.raises(ValueError, match="timeout"):
            await bus.query(GetState(), timeout=bad)
        with pytest.raises(ValueError, match="query_timeout"):
            InMemoryCommBus(query_timeout=bad, instrument=False)

    async def test_concurrent_timeouts_and_successes(self, bus: InMemoryCommBus) -> None:
        async def h(q: GetState) -> str:
            await asyncio.sleep(0.2 if q.key == "slow" else 0.001)
            return q.key

        bus.register_handler("GetState", h)
        keys = ["slow" if i % 2 else f"k{i}" for i in range(50)]
        results = await asyncio.gather(
            *(bus.query(GetState(k), timeout=0.05) for k in keys), return_exceptions=True
        )
        for k, r in zip(keys, results, strict=True):
            if k == "slow":
                assert isinstance(r, TimeoutError)
            else:
                assert r == k

    async def test_cancelling_caller_cancels_handler(self, bus: InMemoryCommBus) -> None:
        cancelled = asyncio.Event()

        async def h(_: Any) -> None:
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        bus.register_handler("GetState", h)
        task = asyncio.create_task(bus.query(GetState()))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cancelled.is_set()

    async def test_handler_that_suspends_many_times_and_swallows_cancel(
        self, bus: InMemoryCommBus
    ) -> None:
        async def h(_: Any) -> str:
            total = 0
            for i in range(5):
                await asyncio.sleep(0)
                total += i
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                return f"swallowed {total}"
            return "never"

        bus.register_handler("GetState", h)
        # asyncio.timeout only raises when the cancellation it sent surfaces
        assert await bus.query(GetState(), timeout=0.02) == "swallowed 10"

    async def test_awaitable_returned_by_sync_handler(self, bus: InMemoryCommBus) -> None:
        loop = asyncio.get_running_loop()

        def h(_: Any) -> asyncio.Future[int]:
            fut: asyncio.Future[int] = loop.create_future()
            loop.call_soon(fut.set_result, 42)
            return fut

        bus.register_handler("GetState", h)
        assert await bus.query(GetState()) == 42

    async def test_a_coroutine_object_returned_as_the_result_is_not_awaited(
        self, bus: InMemoryCommBus
    ) -> None:
        """An async handler returning an unawaited coroutine object: that object is the
        result, on every path (no middleware, a middleware, from a transport)."""
        made: list[Any] = []

        async def later() -> int:
            return 1

        async def h(_: Any) -> Any:
            made.append(later())
            return made[-1]

        bus.register_handler("GetState", h)
        try:
            assert await bus.query(GetState()) is made[-1]
            assert await bus.deliver_incoming("query", GetState()) == ("ok", made[-1])
            bus.add_middleware(Recorder("m", []))
            assert await bus.query(GetState()) is made[-1]
        finally:
            for coro in made:
                coro.close()
        assert len(made) == 3


class Recorder:
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name = name
        self.calls = calls

    def before(self, ctx: MiddlewareContext, message: Any) -> Any:
        self.calls.append(f"before:{self.name}")
        return message

    def after(self, ctx: MiddlewareContext, message: Any, result: Any, error: Any) -> Any:
        self.calls.append(f"after:{self.name}:{ctx.outcome}")
        return result


class AsyncRecorder(Recorder):
    async def before(self, ctx: MiddlewareContext, message: Any) -> Any:
        await asyncio.sleep(0)
        return super().before(ctx, message)

    async def after(self, ctx: MiddlewareContext, message: Any, result: Any, error: Any) -> Any:
        await asyncio.sleep(0)
        return super().after(ctx, message, result, error)


class TestMiddleware:
    async def test_order_sync_and_async(self, bus: InMemoryCommBus) -> None:
        calls: list[str] = []
        bus.add_middleware(Recorder("a", calls))
        bus.add_middleware(AsyncRecorder("b", calls))

        def handler(q: GetState) -> str:
            calls.append("handler")
            return "r"

        bus.register_handler("GetState", handler)
        assert await bus.query(GetState()) == "r"
        assert calls == ["before:a", "before:b", "handler", "after:b:ok", "after:a:ok"]

    async def test_before_none_aborts(self, lbus: InMemoryCommBus, log: ListLogger) -> None:
        calls: list[str] = []

        class Abort:
            def before(self, ctx: MiddlewareContext, message: Any) -> None:
                calls.append("abort")
                return None

            def after(self, ctx: MiddlewareContext, message: Any, result: Any, error: Any) -> Any:
                calls.append(f"after:{ctx.outcome}")
                return result

        lbus.add_middleware(Abort())
        lbus.add_middleware(Recorder("inner", calls))
        lbus.subscribe("MemoryStored", lambda e: calls.append("sub"))
        lbus.register_handler("GetState", lambda q: calls.append("handler"))
        await lbus.publish(MemoryStored("x"))
        with pytest.raises(QueryAbortedError, match="aborted"):
            await lbus.query(GetState())
        assert calls == ["abort", "after:aborted", "abort", "after:aborted"]

    async def test_before_may_replace_message(self, bus: InMemoryCommBus) -> None:
        class Swap:
            def before(self, ctx: MiddlewareContext, message: GetState) -> GetState:
                return GetState(key=message.key.upper())

        bus.add_middleware(Swap())
        bus.register_handler("GetState", lambda q: q.key)
        assert await bus.query(GetState("abc")) == "ABC"

    async def test_after_return_value_becomes_result(self, bus: InMemoryCommBus) -> None:
        class Wrap:
            async def after(
                self, ctx: MiddlewareContext, message: Any, result: Any, error: Any
            ) -> Any:
                return {"wrapped": result}

        bus.add_middleware(Wrap())
        bus.register_handler("GetState", lambda q: 1)
        assert await bus.query(GetState()) == {"wrapped": 1}

    async def test_after_sees_error_and_error_still_raised(self, bus: InMemoryCommBus) -> None:
        seen: list[Any] = []

        class Spy:
            def after(self, ctx: MiddlewareContext, message: Any, result: Any, error: Any) -> Any:
                seen.append((ctx.outcome, type(error).__name__))
                return result

        def boom(_: Any) -> None:
            raise RuntimeError("x")

        bus.add_middleware(Spy())
        bus.register_handler("GetState", boom)
        with pytest.raises(RuntimeError):
            await bus.query(GetState())
        await bus.send(DoThing())  # no handler
        assert seen == [("error", "RuntimeError"), ("no_handler", "NoneType")]

    async def test_exception_in_after_is_logged_and_ignored(
        self, lbus: InMemoryCommBus, log: ListLogger
    ) -> None:
        class Broken:
            def after(self, ctx: MiddlewareContext, message: Any, result: Any, error: Any) -> Any:
                raise RuntimeError("after broke")

        lbus.add_middleware(Broken())
        lbus.register_handler("GetState", lambda q: 5)
        assert await lbus.query(GetState()) == 5
        assert "middleware_after_failed" in log.messages("error")

    async def test_exception_in_before_fails_query_and_is_logged_for_send(
        self, lbus: InMemoryCommBus, log: ListLogger
    ) -> None:
        class Guard:
            def before(self, ctx: MiddlewareContext, message: Any) -> Any:
                raise PermissionError("denied")

        lbus.add_middleware(Guard())
        lbus.register_handler("GetState", lambda q: 5)
        lbus.register_handler("DoThing", lambda q: 5)
        with pytest.raises(PermissionError):
            await lbus.query(GetState())
        await lbus.send(DoThing())
        assert "message_failed" in log.messages("error")

    async def test_timeout_outcome_and_publish_errors_seen_by_after(
        self, bus: InMemoryCommBus
    ) -> None:
        seen: list[tuple[str, str]] = []

        class Spy:
            def after(self, ctx: MiddlewareContext, message: Any, result: Any, error: Any) -> Any:
                seen.append((ctx.outcome, type(error).__name__))
                return result

        async def slow(_: Any) -> None:
            await asyncio.sleep(1)

        def bad(_: Any) -> None:
            raise ValueError("v")

        bus.add_middleware(Spy())
        bus.register_handler("GetState", slow)
        bus.subscribe("MemoryStored", bad)
        bus.subscribe("MemoryStored", bad)
        with pytest.raises(TimeoutError):
            await bus.query(GetState(), timeout=0.01)
        await bus.publish(MemoryStored("x"))
        assert seen == [("timeout", "TimeoutError"), ("error", "ExceptionGroup")]

    async def test_middleware_validation_and_removal(self, bus: InMemoryCommBus) -> None:
        with pytest.raises(TypeError, match="neither"):
            bus.add_middleware(object())  # type: ignore[arg-type]
        calls: list[str] = []
        mw = Recorder("a", calls)
        bus.add_middleware(mw)
        assert bus.remove_middleware(mw) and not bus.remove_middleware(mw)
        bus.register_handler("GetState", lambda q: 1)
        await bus.query(GetState())
        assert calls == []

    async def test_context_fields(self, bus: InMemoryCommBus) -> None:
        got: list[MiddlewareContext] = []

        class Spy:
            def before(self, ctx: MiddlewareContext, message: Any) -> Any:
                got.append(ctx)
                return message

        bus.add_middleware(Spy())

        def handler(_: Any) -> None:
            pass

        bus.subscribe("MemoryStored", handler)
        entered = datetime.now(UTC)
        await bus.publish(MemoryStored("x"))
        await asyncio.sleep(0.2)
        ctx = got[0]
        assert abs((ctx.timestamp - entered).total_seconds()) < 0.1  # entry time, read late
        assert ctx.pattern == "publish" and ctx.message_type == "MemoryStored"
        assert ctx.timestamp.tzinfo is not None and ctx.metadata == {}
        assert ctx.message_id and ctx.message_id == ctx.message_id
        assert ctx.handlers == [f"{__name__}.{handler.__qualname__}"]
        assert ctx.direction == "local"


class TestIntrospectionAndSingleton:
    async def test_introspection(self, bus: InMemoryCommBus) -> None:
        def h(_: Any) -> None:
            pass

        bus.subscribe("B", h)
        bus.register_handler("A", h)
        assert bus.has_handler("A") and not bus.has_handler("B")
        assert bus.get_subscribers("B") == [h] and bus.get_subscribers("none") == []
        assert bus.get_registered_types() == ["A", "B"]
        assert bus.unregister_handler("A") and not bus.unregister_handler("A")
        assert bus.get_registered_types() == ["B"]

    def test_singleton(self) -> None:
        a = get_commbus()
        assert get_commbus() is a
        reset_commbus()
        assert get_commbus() is not a


class TestFanOutTaskBinding:
    """A started coroutine never moves to another task: what a subscriber binds to the
    current task before its first suspension (asyncio.timeout, a TaskGroup) stays right."""

    async def test_timeouts_inside_concurrent_subscribers(self, bus: InMemoryCommBus) -> None:
        outcomes: list[str] = []

        def make(name: str, delay: float) -> Any:
            async def sub(_: Any) -> None:
                try:
                    async with asyncio.timeout(0.05):
                        await asyncio.sleep(delay)
                    outcomes.append(f"{name}:done")
                except TimeoutError:
                    outcomes.append(f"{name}:timeout")

            return sub

        bus.subscribe("MemoryStored", make("a", 1))
        bus.subscribe("MemoryStored", make("b", 1))
        bus.subscribe("MemoryStored", make("c", 0))
        await asyncio.wait_for(bus.publish(MemoryStored("x")), 2)
        assert sorted(outcomes) == ["a:timeout", "b:timeout", "c:done"]

    async def test_task_group_inside_subscribers(self, bus: InMemoryCommBus) -> None:
        done: list[int] = []

        async def sub(_: Any) -> None:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(asyncio.sleep(0.01))
            done.append(1)

        for _ in range(3):
            bus.subscribe("MemoryStored", sub)
        await bus.publish(MemoryStored("x"))
        assert done == [1, 1, 1]

    async def test_current_task_is_stable_within_a_subscriber(self, bus: InMemoryCommBus) -> None:
        stable: list[bool] = []

        async def sub(_: Any) -> None:
            me = asyncio.current_task()
            await asyncio.sleep(0)
            stable.append(asyncio.current_task() is me)

        for _ in range(3):
            bus.subscribe("MemoryStored", sub)
        await bus.publish(MemoryStored("x"))
        assert stable == [True, True, True]

    async def test_sync_subscriber_returning_awaitable_after_a_suspended_one(
        self, bus: InMemoryCommBus
    ) -> None:
        seen: list[str] = []

        async def slow(_: Any) -> None:
            await asyncio.sleep(0.001)
            seen.append("slow")

        async def later() -> None:
            await asyncio.sleep(0)
            seen.append("later")

        bus.subscribe("MemoryStored", slow)
        bus.subscribe("MemoryStored", lambda e: later())
        await bus.publish(MemoryStored("x"))
        assert sorted(seen) == ["later", "slow"]


async def test_clear_keeps_an_attached_transport(bus: InMemoryCommBus) -> None:
    carried: list[str] = []

    class Fake:
        async def publish(self, ctx: MiddlewareContext, message: Any) -> None:
            carried.append(ctx.message_type)

        async def send(self, ctx: MiddlewareContext, message: Any) -> None:
            carried.append(ctx.message_type)

        async def query(self, ctx: MiddlewareContext, message: Any, timeout: float) -> Any:
            return "remote"

    bus.attach_transport(Fake())
    bus.subscribe("MemoryStored", lambda e: carried.append("local"))
    bus.clear()
    await bus.publish(MemoryStored("x"))
    assert carried == ["MemoryStored"]
    assert await bus.query(GetState()) == "remote"
    bus.detach_transport()
    with pytest.raises(NoHandlerError):
        await bus.query(GetState())


class Scoped(Recorder):
    """A Recorder that only applies to the (pattern, direction) pairs it is given."""

    def __init__(self, name: str, calls: list[str], scope: set[tuple[str, str]]) -> None:
        super().__init__(name, calls)
        self.scope = scope
        self.asked: list[tuple[str, str]] = []

    def applies_to(self, pattern: str, direction: str) -> bool:
        self.asked.append((pattern, direction))
        return (pattern, direction) in self.scope


class Carrier:
    """A transport that records what it carried and answers queries with ``answer``."""

    system = "fake"

    def __init__(self, answer: Any = "remote", fail: BaseException | None = None) -> None:
        self.carried: list[tuple[str, str, str]] = []
        self.answer = answer
        self.fail = fail

    async def _carry(self, ctx: MiddlewareContext) -> None:
        self.carried.append((ctx.pattern, ctx.direction, ctx.system))
        if self.fail is not None:
            raise self.fail

    async def publish(self, ctx: MiddlewareContext, message: Any) -> None:
        await self._carry(ctx)

    async def send(self, ctx: MiddlewareContext, message: Any) -> None:
        await self._carry(ctx)

    async def query(self, ctx: MiddlewareContext, message: Any, timeout: float) -> Any:
        await self._carry(ctx)
        return self.answer


class TestMiddlewareScope:
    async def test_a_middleware_sees_only_what_it_applies_to(self, bus: InMemoryCommBus) -> None:
        calls: list[str] = []
        scoped = Scoped("s", calls, {("query", "local")})
        bus.add_middleware(scoped)
        bus.add_middleware(Recorder("all", calls))
        bus.subscribe("MemoryStored", lambda e: calls.append("sub"))
        bus.register_handler("GetState", lambda q: "r")
        await bus.publish(MemoryStored("x"))
        assert calls == ["before:all", "sub", "after:all:ok"]
        calls.clear()
        assert await bus.query(GetState()) == "r"
        assert calls == ["before:s", "before:all", "after:all:ok", "after:s:ok"]
        # asked when compiled, never per message
        asked = len(scoped.asked)
        await bus.publish(MemoryStored("y"))
        assert len(scoped.asked) == asked

    async def test_no_applicable_middleware_takes_the_direct_path(
        self, bus: InMemoryCommBus
    ) -> None:
        calls: list[str] = []
        bus.add_middleware(Scoped("s", calls, {("send", "in")}))
        bus.subscribe("MemoryStored", lambda e: calls.append("sub"))
        await bus.publish(MemoryStored("x"))
        assert calls == ["sub"]
        outcome, _ = await bus.deliver_incoming("send", DoThing(), message_id="m1")
        assert outcome == "no_handler"
        assert calls == ["sub", "before:s", "after:s:no_handler"]

    async def test_a_transport_gets_the_direct_path_when_nothing_applies(
        self, bus: InMemoryCommBus
    ) -> None:
        calls: list[str] = []
        bus.add_middleware(Scoped("s", calls, {("send", "in")}))
        carrier = Carrier(answer=7)
        bus.attach_transport(carrier)
        await bus.publish(MemoryStored("x"))
        await bus.send(DoThing())
        assert await bus.query(GetState()) == 7
        assert calls == []
        assert carrier.carried == [
            ("publish", "out", "fake"),
            ("send", "out", "fake"),
            ("query", "out", "fake"),
        ]

    @pytest.mark.parametrize("scoped", [False, True])
    async def test_a_failing_transport_raises_transport_error_on_both_paths(
        self, bus: InMemoryCommBus, scoped: bool
    ) -> None:
        from jeeves_control_tower.ipc import TransportError

        calls: list[str] = []
        scope = {("publish", "out"), ("send", "out")} if scoped else {("send", "in")}
        bus.add_middleware(Scoped("s", calls, scope))
        bus.attach_transport(Carrier(fail=ConnectionResetError("gone")))
        with pytest.raises(TransportError, match="ConnectionResetError: gone"):
            await bus.publish(MemoryStored("x"))
        with pytest.raises(TransportError, match="was not accepted"):
            await bus.send(DoThing())
        assert calls == (
            ["before:s", "after:s:error", "before:s", "after:s:error"] if scoped else []
        )

    async def test_a_transport_returning_a_failed_future_raises_transport_error(
        self, bus: InMemoryCommBus
    ) -> None:
        from jeeves_control_tower.ipc import TransportError

        class FutureCarrier:
            """A transport whose methods are plain functions returning futures."""

            def _failed(self) -> asyncio.Future[None]:
                future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                future.set_exception(OSError("refused"))
                return future

            def publish(self, ctx: MiddlewareContext, message: Any) -> asyncio.Future[None]:
                return self._failed()

            def send(self, ctx: MiddlewareContext, message: Any) -> asyncio.Future[None]:
                return self._failed()

            async def query(self, ctx: MiddlewareContext, message: Any, timeout: float) -> Any:
                return None

        bus.attach_transport(FutureCarrier())  # type: ignore[arg-type]
        with pytest.raises(TransportError, match=r"publish .MemoryStored. .*OSError: refused"):
            await bus.publish(MemoryStored("x"))
        with pytest.raises(TransportError, match=r"send .DoThing. .*OSError: refused"):
            await bus.send(DoThing())

    async def test_attaching_a_transport_recompiles_for_out(self, bus: InMemoryCommBus) -> None:
        calls: list[str] = []
        bus.add_middleware(Scoped("s", calls, {("publish", "out")}))
        bus.subscribe("MemoryStored", lambda e: calls.append("sub"))
        await bus.publish(MemoryStored("x"))
        assert calls == ["sub"]
        bus.attach_transport(Carrier())
        await bus.publish(MemoryStored("y"))
        assert calls == ["sub", "before:s", "after:s:ok"]
        bus.detach_transport()
        await bus.publish(MemoryStored("z"))
        assert calls == ["sub", "before:s", "after:s:ok", "sub"]

    async def test_contexts_name_the_system_carrying_the_message(
        self, bus: InMemoryCommBus
    ) -> None:
        seen: list[tuple[str, str]] = []

        class Watch:
            def before(self, ctx: MiddlewareContext, message: Any) -> Any:
                seen.append((ctx.direction, ctx.system))
                return message

        bus.add_middleware(Watch())
        bus.subscribe("MemoryStored", lambda e: None)
        await bus.publish(MemoryStored("a"))
        bus.attach_transport(Carrier())
        await bus.publish(MemoryStored("b"))
        await bus.deliver_incoming("publish", MemoryStored("c"))
        bus.detach_transport()
        await bus.publish(MemoryStored("d"))
        await bus.deliver_incoming("publish", MemoryStored("e"))
        assert seen == [
            ("local", "jeeves.commbus"),
            ("out", "fake"),
            ("in", "fake"),
            ("local", "jeeves.commbus"),
            ("in", "jeeves.commbus"),
        ]

    async def test_a_raising_applies_to_leaves_the_bus_unchanged(
        self, bus: InMemoryCommBus
    ) -> None:
        calls: list[str] = []
        bus.add_middleware(Recorder("a", calls))

        class Broken(Recorder):
            def applies_to(self, pattern: str, direction: str) -> bool:
                raise RuntimeError("no")

        with pytest.raises(RuntimeError, match="no"):
            bus.add_middleware(Broken("b", calls))
        assert len(bus.middlewares) == 1
        bus.subscribe("MemoryStored", lambda e: calls.append("sub"))
        await bus.publish(MemoryStored("x"))
        assert calls == ["before:a", "sub", "after:a:ok"]

    def test_applies_to_must_be_callable(self, bus: InMemoryCommBus) -> None:
        class NotCallable(Recorder):
            applies_to = True

        with pytest.raises(TypeError, match="applies_to is not callable"):
            bus.add_middleware(NotCallable("x", []))


class TestDeliverIncomingDirect:
    """``deliver_incoming`` with no middleware: the outcome it reports, and errors."""

    async def test_publish_outcomes(self, lbus: InMemoryCommBus, log: ListLogger) -> None:
        assert await lbus.deliver_incoming("publish", MemoryStored("x")) == ("no_handler", None)
        seen: list[str] = []
        lbus.subscribe("MemoryStored", lambda e: seen.append(e.item_id))
        assert await lbus.deliver_incoming("publish", MemoryStored("a")) == ("ok", None)

        async def boom(e: MemoryStored) -> None:
            await asyncio.sleep(0)
            raise ValueError("bad")

        lbus.subscribe("MemoryStored", boom)
        assert await lbus.deliver_incoming("publish", MemoryStored("b")) == ("error", None)
        assert seen == ["a", "b"]
        assert log.messages("error") == ["subscriber_failed"]

    async def test_single_failing_subscriber(self, lbus: InMemoryCommBus) -> None:
        lbus.subscribe("MemoryStored", lambda e: 1 / 0)
        assert await lbus.deliver_incoming("publish", MemoryStored("a")) == ("error", None)

    async def test_send_outcomes(self, lbus: InMemoryCommBus, log: ListLogger) -> None:
        assert await lbus.deliver_incoming("send", DoThing()) == ("no_handler", None)

        def handle(c: DoThing) -> None:
            if c.n:
                raise KeyError(c.n)

        lbus.register_handler("DoThing", handle)
        assert await lbus.deliver_incoming("send", DoThing(0)) == ("ok", None)
        assert await lbus.deliver_incoming("send", DoThing(3)) == ("error", None)
        assert log.messages("error") == ["command_failed"]
        assert log.messages("warning") == ["no_handler"]

    async def test_query_result_errors_and_timeout(self, lbus: InMemoryCommBus) -> None:
        with pytest.raises(NoHandlerError):
            await lbus.deliver_incoming("query", GetState())

        async def answer(q: GetState) -> str:
            await asyncio.sleep(0.5 if q.key == "slow" else 0)
            if q.key == "bad":
                raise LookupError(q.key)
            return q.key * 2

        lbus.register_handler("GetState", answer)
        assert await lbus.deliver_incoming("query", GetState("ab")) == ("ok", "abab")
        with pytest.raises(LookupError):
            await lbus.deliver_incoming("query", GetState("bad"))
        with pytest.raises(TimeoutError):
            await lbus.deliver_incoming("query", GetState("slow"), timeout=0.01)


class TestDeliverLocalDeprecated:
    async def test_the_old_name_delivers_with_a_deprecation_warning(
        self, lbus: InMemoryCommBus
    ) -> None:
        lbus.register_handler("GetState", lambda q: q.key * 2)
        with pytest.warns(DeprecationWarning, match="deliver_incoming"):
            pending = lbus.deliver_local("query", GetState("ab"))
        assert await pending == ("ok", "abab")


class TestDeliverIncomingThroughTheChain:
    """``deliver_incoming`` with middleware: the same outcomes, read off the context."""

    async def test_publish_and_send_report_outcome_and_no_result(
        self, lbus: InMemoryCommBus
    ) -> None:
        class Answering(Recorder):
            def after(self, ctx: MiddlewareContext, message: Any, result: Any, error: Any) -> Any:
                super().after(ctx, message, result, error)
                return "ignored for publish and send"

        calls: list[str] = []
        lbus.add_middleware(Answering("m", calls))
        assert await lbus.deliver_incoming("publish", MemoryStored("x")) == ("no_handler", None)
        lbus.subscribe("MemoryStored", lambda e: None)
        assert await lbus.deliver_incoming("publish", MemoryStored("x")) == ("ok", None)
        lbus.register_handler("DoThing", lambda c: 1 / c.n)
        assert await lbus.deliver_incoming("send", DoThing(1)) == ("ok", None)
        assert await lbus.deliver_incoming("send", DoThing(0)) == ("error", None)
        assert calls == [
            "before:m",
            "after:m:no_handler",
            "before:m",
            "after:m:ok",
            "before:m",
            "after:m:ok",
            "before:m",
            "after:m:error",
        ]

    async def test_after_sees_no_result_without_a_handler(self, lbus: InMemoryCommBus) -> None:
        results: list[Any] = []

        class Results:
            def after(self, ctx: MiddlewareContext, message: Any, result: Any, error: Any) -> Any:
                results.append((ctx.pattern, ctx.outcome, result))
                return result

        lbus.add_middleware(Results())
        await lbus.publish(MemoryStored("x"))
        await lbus.send(DoThing())
        assert await lbus.deliver_incoming("publish", MemoryStored("y")) == ("no_handler", None)
        assert results == [
            ("publish", "no_handler", None),
            ("send", "no_handler", None),
            ("publish", "no_handler", None),
        ]

    async def test_after_sees_no_result_when_a_suspended_step_fails(
        self, lbus: InMemoryCommBus
    ) -> None:
        """A handler that suspends, then raises or times out: ``after`` gets the error and
        ``result=None``, never the step's pending coroutine."""
        seen: list[tuple[str, str, Any, str]] = []

        class Results:
            def after(self, ctx: MiddlewareContext, message: Any, result: Any, error: Any) -> Any:
                seen.append((ctx.pattern, ctx.outcome, result, type(error).__name__))
                return result

        async def fail(_: Any) -> None:
            await asyncio.sleep(0)
            raise KeyError("boom")

        async def slow(_: Any) -> None:
            await asyncio.sleep(10)

        lbus.add_middleware(Results())
        lbus.subscribe("MemoryStored", fail)
        lbus.subscribe("MemoryStored", fail)
        lbus.register_handler("DoThing", fail)
        lbus.register_handler("GetState", fail)
        await lbus.publish(MemoryStored("x"))
        await lbus.send(DoThing())
        with pytest.raises(KeyError):
            await lbus.query(GetState())
        lbus.unregister_handler("GetState")
        lbus.register_handler("GetState", slow)
        with pytest.raises(TimeoutError):
            await lbus.query(GetState(), timeout=0.01)
        assert [(p, r) for p, _, r, _ in seen] == [
            ("publish", None),
            ("send", None),
            ("query", None),
            ("query", None),
        ]
        assert [e for *_, e in seen][2:] == ["KeyError", "TimeoutError"]

    async def test_aborted(self, lbus: InMemoryCommBus) -> None:
        class Abort:
            def before(self, ctx: MiddlewareContext, message: Any) -> None:
                return None

        lbus.add_middleware(Abort())
        lbus.register_handler("DoThing", lambda c: None)
        assert await lbus.deliver_incoming("send", DoThing()) == ("aborted", None)
        with pytest.raises(QueryAbortedError):
            await lbus.deliver_incoming("query", GetState())


class TestLoneHandlers:
    """A lone subscriber and a command's handler are awaited in the caller's task."""

    async def test_sync_handlers_returning_awaitables_are_awaited(
        self, bus: InMemoryCommBus
    ) -> None:
        loop = asyncio.get_running_loop()
        done: list[str] = []

        def later(what: str) -> asyncio.Future[None]:
            fut: asyncio.Future[None] = loop.create_future()

            def resolve() -> None:
                done.append(what)
                fut.set_result(None)

            loop.call_soon(resolve)
            return fut

        bus.subscribe("MemoryStored", lambda e: later("event"))
        bus.register_handler("DoThing", lambda c: later("command"))
        await bus.publish(MemoryStored("a"))
        await bus.send(DoThing())
        assert done == ["event", "command"]

    async def test_errors_after_a_suspension_are_logged(
        self, lbus: InMemoryCommBus, log: ListLogger
    ) -> None:
        async def fail(_: Any) -> None:
            await asyncio.sleep(0)
            raise RuntimeError("late")

        lbus.subscribe("MemoryStored", fail)
        lbus.register_handler("DoThing", fail)
        await lbus.publish(MemoryStored("a"))
        await lbus.send(DoThing())
        assert log.messages("error") == ["subscriber_failed", "command_failed"]

    async def test_a_handler_that_cannot_be_called_is_logged(
        self, lbus: InMemoryCommBus, log: ListLogger
    ) -> None:
        async def no_argument() -> None:
            return None

        lbus.subscribe("MemoryStored", no_argument)  # type: ignore[arg-type]
        lbus.register_handler("DoThing", no_argument)  # type: ignore[arg-type]
        await lbus.publish(MemoryStored("a"))
        await lbus.send(DoThing())
        assert await lbus.deliver_incoming("publish", MemoryStored("b")) == ("error", None)
        assert log.messages("error") == ["subscriber_failed", "command_failed", "subscriber_failed"]

    async def test_the_handler_runs_in_the_callers_task(self, bus: InMemoryCommBus) -> None:
        tasks: list[asyncio.Task[Any] | None] = []

        async def where(_: Any) -> None:
            await asyncio.sleep(0)
            tasks.append(asyncio.current_task())

        bus.subscribe("MemoryStored", where)
        bus.register_handler("DoThing", where)
        await bus.publish(MemoryStored("a"))
        await bus.send(DoThing())
        assert tasks == [asyncio.current_task()] * 2
