"""What a bus handler sees and sets in its context, with tracing on.

- A subscriber started after another one of the same publish has suspended runs in its
  own context copy like the others (its span current inside it, what it sets its own), also
  when it is a plain function or a plain function returning an awaitable.
- A handler of a traced (sampled) message runs in a copy of the caller's context, so its
  span is current only inside it and what it sets there stays its own; a handler of a
  message that is not traced (sampled out) runs as it would with no telemetry at all
  (docs/observability.md, "Handler context").
- A dispatch handler under a dispatch span runs in a context copy whatever the sampling
  decision; with no span (no SDK, or metrics and flow only) as with no telemetry.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.types import Envelope

from .conftest import Telemetry
from .support import DoThing, GetState, Stored, envelope, register, target

_SET_BY: contextvars.ContextVar[str] = contextvars.ContextVar("set_by", default="nobody")


async def _suspends(e: Stored) -> None:
    await asyncio.sleep(0)


def _plain(e: Stored) -> None:
    _SET_BY.set("handler")
    _plain.seen.append(trace.get_current_span().get_span_context().span_id)  # type: ignore[attr-defined]


async def _later() -> None:
    await asyncio.sleep(0)


def _returns_awaitable(e: Stored) -> Awaitable[None]:
    _SET_BY.set("handler")
    _returns_awaitable.seen.append(trace.get_current_span().get_span_context().span_id)  # type: ignore[attr-defined]
    return _later()


@pytest.mark.parametrize("late", [_plain, _returns_awaitable], ids=["plain", "returns_awaitable"])
async def test_a_subscriber_after_one_that_suspended_runs_in_its_own_context(
    instrumented_bus: InMemoryCommBus, tel: Telemetry, late: Any
) -> None:
    late.seen = []
    instrumented_bus.subscribe("Stored", _suspends)
    instrumented_bus.subscribe("Stored", late)
    _SET_BY.set("caller")
    await instrumented_bus.publish(Stored())
    assert _SET_BY.get() == "caller"
    (own,) = [
        s
        for s in tel.spans()
        if s.name == "process Stored"
        and str((s.attributes or {})["code.function.name"]).endswith(late.__name__)
    ]
    assert late.seen == [own.context.span_id]  # its own span, not the producer's


async def _what_the_caller_sees(bus: InMemoryCommBus, pattern: str) -> str:
    async def handler(message: Any) -> int:
        _SET_BY.set("handler")
        return 1

    if pattern == "publish":
        bus.subscribe("Stored", handler)
    else:
        bus.register_handler("DoThing" if pattern == "send" else "GetState", handler)
    token = _SET_BY.set("caller")
    try:
        if pattern == "publish":
            await bus.publish(Stored())
        elif pattern == "send":
            await bus.send(DoThing())
        else:
            assert await bus.query(GetState()) == 1
        return _SET_BY.get()
    finally:
        _SET_BY.reset(token)


@pytest.mark.parametrize("pattern", ["publish", "send", "query"])
async def test_a_sampled_message_handler_sets_its_context_for_itself_alone(pattern: str) -> None:
    provider = TracerProvider(sampler=ALWAYS_ON, shutdown_on_exit=False)
    bus = InMemoryCommBus(registry=CollectorRegistry(), flow=False, tracer_provider=provider)
    assert await _what_the_caller_sees(bus, pattern) == "caller"


@pytest.mark.parametrize("pattern", ["publish", "send", "query"])
async def test_an_unsampled_message_handler_runs_as_with_no_telemetry(pattern: str) -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    traced = InMemoryCommBus(registry=CollectorRegistry(), flow=False, tracer_provider=provider)
    plain = InMemoryCommBus(instrument=False)
    assert await _what_the_caller_sees(traced, pattern) == await _what_the_caller_sees(
        plain, pattern
    )


async def _what_the_dispatch_caller_sees(coordinator: CommBusCoordinator) -> str:
    async def handler(e: Envelope) -> Envelope:
        _SET_BY.set("handler")
        return e

    register(coordinator, handler=handler)
    token = _SET_BY.set("caller")
    try:
        result = await coordinator.dispatch(target(), envelope())
        assert not result.terminated
        return _SET_BY.get()
    finally:
        _SET_BY.reset(token)


async def test_a_recorded_dispatch_attempt_sets_its_context_for_itself_alone() -> None:
    provider = TracerProvider(sampler=ALWAYS_ON, shutdown_on_exit=False)
    coordinator = CommBusCoordinator(
        None, InMemoryCommBus(instrument=False), registry=CollectorRegistry(), flow=False,
        tracer_provider=provider,
    )  # fmt: skip
    assert await _what_the_dispatch_caller_sees(coordinator) == "caller"


async def test_a_sampled_out_dispatch_keeps_its_handlers_context_too() -> None:
    """With a dispatch span, what a handler sets never depends on the sampling decision:
    every attempt runs in a context of its own, sampled or not."""
    provider = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    coordinator = CommBusCoordinator(
        None, InMemoryCommBus(instrument=False), registry=CollectorRegistry(), flow=False,
        tracer_provider=provider,
    )  # fmt: skip
    assert await _what_the_dispatch_caller_sees(coordinator) == "caller"


@pytest.mark.parametrize("options", ["no_sdk", "metrics_only"])
async def test_a_dispatch_with_no_span_runs_its_handler_as_with_no_telemetry(
    options: str,
) -> None:
    """No SDK configured (a dispatch observer with nothing going) or metrics and flow only
    (no observer): the handler runs in the caller's context, as with ``instrument=False``."""
    kw: dict[str, Any] = {"registry": CollectorRegistry(), "flow": False}
    if options == "metrics_only":
        kw["tracing"] = False
    observed = CommBusCoordinator(None, InMemoryCommBus(instrument=False), **kw)
    plain = CommBusCoordinator(None, InMemoryCommBus(instrument=False), instrument=False)
    seen = await _what_the_dispatch_caller_sees(observed)
    assert seen == await _what_the_dispatch_caller_sees(plain) == "handler"
