"""Dispatch spans: one PRODUCER span per dispatch, one CONSUMER child span per attempt."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.types import Envelope, SchedulingPriority

from .conftest import Telemetry
from .support import Stored, echo, envelope, register, target


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def attempts(tel: Telemetry) -> list[ReadableSpan]:
    return sorted(
        (s for s in tel.spans() if s.name == "process svc"),
        key=lambda s: int(attrs(s)["jeeves.dispatch.attempt"]),
    )


async def test_ok_dispatch(instrumented_coordinator: CommBusCoordinator, tel: Telemetry) -> None:
    register(instrumented_coordinator, handler=echo)
    result = await instrumented_coordinator.dispatch(
        target(priority=SchedulingPriority.HIGH), envelope()
    )
    assert not result.terminated
    span = tel.span("dispatch svc")
    assert span.kind is SpanKind.PRODUCER
    assert span.status.status_code is StatusCode.UNSET
    assert attrs(span) == {
        "messaging.system": "jeeves.commbus",
        "messaging.operation.type": "send",
        "messaging.operation.name": "dispatch",
        "messaging.destination.name": "svc",
        "jeeves.dispatch.service": "svc",
        "jeeves.dispatch.method": "run",
        "jeeves.dispatch.priority": "high",
        "jeeves.dispatch.attempts": 1,
        "jeeves.dispatch.outcome": "ok",
    }
    (attempt,) = attempts(tel)
    assert attempt.kind is SpanKind.CONSUMER
    assert attempt.parent is not None and attempt.parent.span_id == span.context.span_id
    assert attrs(attempt)["jeeves.dispatch.attempt"] == 1


async def test_retries_are_sibling_attempt_spans(
    instrumented_coordinator: CommBusCoordinator, tel: Telemetry
) -> None:
    calls = 0

    async def flaky(e: Envelope) -> Envelope:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("flaky")
        return e

    register(instrumented_coordinator, handler=flaky)
    result = await instrumented_coordinator.dispatch(target(), envelope())
    assert not result.terminated
    span = tel.span("dispatch svc")
    assert attrs(span)["jeeves.dispatch.attempts"] == 3
    assert span.status.status_code is StatusCode.UNSET
    spans = attempts(tel)
    assert [s.status.status_code for s in spans] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert attrs(spans[0])["error.type"] == "ConnectionError"
    assert {s.parent.span_id for s in spans if s.parent} == {span.context.span_id}


async def test_error_after_retries(
    instrumented_coordinator: CommBusCoordinator, tel: Telemetry
) -> None:
    async def broken(e: Envelope) -> Envelope:
        raise KeyError("k")

    register(instrumented_coordinator, handler=broken)
    result = await instrumented_coordinator.dispatch(target(max_retries=1), envelope())
    assert result.terminated
    span = tel.span("dispatch svc")
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["error.type"] == "KeyError"
    assert attrs(span)["jeeves.dispatch.outcome"] == "error"
    assert attrs(span)["jeeves.dispatch.attempts"] == 2
    assert any(e.name == "exception" for e in span.events)
    assert len(attempts(tel)) == 2


async def test_attempt_timeout(
    instrumented_coordinator: CommBusCoordinator, tel: Telemetry
) -> None:
    async def slow(e: Envelope) -> Envelope:
        await asyncio.sleep(5)
        return e

    register(instrumented_coordinator, handler=slow)
    result = await instrumented_coordinator.dispatch(target(timeout_seconds=0.02), envelope())
    assert result.terminated
    span = tel.span("dispatch svc")
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["error.type"] == "timeout"
    assert attrs(span)["jeeves.dispatch.outcome"] == "timeout"
    (attempt,) = attempts(tel)
    assert attempt.status.status_code is StatusCode.ERROR
    assert attrs(attempt)["error.type"] == "timeout"


@pytest.mark.parametrize("outcome", ["unknown_service", "unhealthy", "no_handler"])
async def test_refused_dispatches(
    instrumented_coordinator: CommBusCoordinator, tel: Telemetry, outcome: str
) -> None:
    if outcome != "unknown_service":
        register(instrumented_coordinator)
    if outcome == "unhealthy":
        instrumented_coordinator.set_service_health("svc", False)
    result = await instrumented_coordinator.dispatch(target(), envelope())
    assert result.terminated
    span = tel.span("dispatch svc")
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["error.type"] == outcome
    assert attrs(span)["jeeves.dispatch.outcome"] == outcome
    assert attrs(span)["jeeves.dispatch.attempts"] == 0
    assert attempts(tel) == []


async def test_overloaded_and_slot_wait_timeout(tel: Telemetry) -> None:
    coordinator = CommBusCoordinator(
        tel.logger, InMemoryCommBus(instrument=False), max_queue=1, **tel.options
    )
    gate = asyncio.Event()

    async def blocked(e: Envelope) -> Envelope:
        await gate.wait()
        return e

    register(coordinator, handler=blocked, max_concurrent=1)
    first = asyncio.ensure_future(coordinator.dispatch(target(), envelope("a")))
    await asyncio.sleep(0)
    waiting = asyncio.ensure_future(
        coordinator.dispatch(target(timeout_seconds=0.05), envelope("b"))
    )
    await asyncio.sleep(0)
    refused = await coordinator.dispatch(target(), envelope("c"))
    assert refused.terminated
    assert (await waiting).terminated
    gate.set()
    assert not (await first).terminated
    outcomes = sorted(
        str(attrs(s)["jeeves.dispatch.outcome"]) for s in tel.spans() if s.name == "dispatch svc"
    )
    assert outcomes == ["ok", "overloaded", "timeout"]
    errors = {str(attrs(s).get("error.type")) for s in tel.spans() if s.name == "dispatch svc"}
    assert errors == {"None", "overloaded", "timeout"}


async def test_cancelled_dispatch(
    instrumented_coordinator: CommBusCoordinator, tel: Telemetry
) -> None:
    started = asyncio.Event()

    async def hang(e: Envelope) -> Envelope:
        started.set()
        await asyncio.sleep(10)
        return e

    register(instrumented_coordinator, handler=hang)
    task = asyncio.ensure_future(instrumented_coordinator.dispatch(target(), envelope()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    span = tel.span("dispatch svc")
    assert attrs(span)["jeeves.dispatch.outcome"] == "cancelled"
    assert attrs(span)["error.type"] == "cancelled"
    assert attrs(attempts(tel)[0])["error.type"] == "cancelled"
    assert attrs(span)["jeeves.dispatch.attempts"] == len(attempts(tel)) == 1  # the one made


async def test_handler_continues_the_trace(
    instrumented_coordinator: CommBusCoordinator, instrumented_bus: InMemoryCommBus, tel: Telemetry
) -> None:
    seen: list[int] = []

    async def handler(e: Envelope) -> Envelope:
        await asyncio.sleep(0)
        seen.append(trace.get_current_span().get_span_context().span_id)
        await instrumented_bus.publish(Stored())
        return e

    instrumented_bus.subscribe("Stored", lambda e: None)
    register(instrumented_coordinator, handler=handler)
    before = trace.get_current_span()
    await instrumented_coordinator.dispatch(target(), envelope())
    assert trace.get_current_span() is before
    (attempt,) = attempts(tel)
    assert seen == [attempt.context.span_id]
    publish = tel.span("publish Stored")
    assert publish.parent is not None and publish.parent.span_id == attempt.context.span_id
    assert len({s.context.trace_id for s in tel.spans()}) == 1


async def test_request_context_trace_ids_are_linked_not_continued(
    instrumented_coordinator: CommBusCoordinator, tel: Telemetry
) -> None:
    register(instrumented_coordinator, handler=echo)
    trace_hex, span_hex = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    await instrumented_coordinator.dispatch(
        target(), envelope(trace_id=trace_hex, span_id=span_hex)
    )
    span = tel.span("dispatch svc")
    assert span.parent is None  # ids carry no sampling decision: a root the sampler decides
    (link,) = span.links
    assert f"{link.context.trace_id:032x}" == trace_hex
    assert f"{link.context.span_id:016x}" == span_hex

    tel.exporter.clear()
    await instrumented_coordinator.dispatch(target(), envelope(trace_id="not-hex", span_id="zz"))
    assert tel.span("dispatch svc").parent is None
    assert not tel.span("dispatch svc").links


async def test_a_noop_provider_keeps_the_callers_span_current(tel: Telemetry) -> None:
    """No SDK behind the coordinator's tracer: no dispatch span, and the caller's span (made
    by another provider) stays current in the handler and afterwards."""
    bus = InMemoryCommBus(instrument=False)
    coordinator = CommBusCoordinator(
        None, bus, tracer_provider=trace.NoOpTracerProvider(), registry=tel.registry
    )
    seen: list[trace.SpanContext] = []

    async def handler(e: Envelope) -> Envelope:
        seen.append(trace.get_current_span().get_span_context())
        return e

    register(coordinator, handler=handler)
    with tel.provider.get_tracer("app").start_as_current_span("caller") as caller:
        await coordinator.dispatch(target(), envelope())
        assert trace.get_current_span() is caller
    assert seen == [caller.get_span_context()]
    assert [s.name for s in tel.spans()] == ["caller"]


async def test_with_no_sdk_a_callers_carrier_still_reaches_the_handler(tel: Telemetry) -> None:
    """No SDK behind the coordinator's tracer: a dispatch with no caller's context in its
    envelope runs unobserved by the tracer (its ``wants_dispatch`` says no), one with a
    carrier still has the caller's context current in the handler, for it to pass along."""
    coordinator = CommBusCoordinator(
        None,
        InMemoryCommBus(instrument=False),
        tracer_provider=trace.NoOpTracerProvider(),
        registry=tel.registry,
    )
    seen: list[trace.SpanContext] = []

    async def handler(e: Envelope) -> Envelope:
        seen.append(trace.get_current_span().get_span_context())
        return e

    register(coordinator, handler=handler)
    trace_hex = "4bf92f3577b34da6a3ce929d0e0e4736"
    carrier = {"traceparent": f"00-{trace_hex}-00f067aa0ba902b7-01"}
    await coordinator.dispatch(target(), envelope(trace_carrier=carrier))
    await coordinator.dispatch(target(), envelope())
    assert f"{seen[0].trace_id:032x}" == trace_hex and seen[0].is_remote
    assert not seen[1].is_valid
    assert tel.spans() == []
