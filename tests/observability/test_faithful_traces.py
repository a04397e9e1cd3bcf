"""The caller's sampling decision and tracestate survive a dispatch; ids alone are only a
link; span kinds and the schema URL follow one semantic-conventions version."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator

import pytest
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.observability import trace_carrier
from jeeves_control_tower.observability.semconv import SCHEMA_URL, SEMCONV_VERSION
from jeeves_control_tower.types import Envelope, RequestContext

from .conftest import Telemetry
from .support import GetState, Stored, envelope, register, target

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def carrier(flags: str) -> dict[str, str]:
    return {"traceparent": f"00-{TRACE}-{SPAN}-{flags}", "tracestate": "vendor=abc,other=1"}


@pytest.fixture
def tel() -> Iterator[Telemetry]:
    """Telemetry sampled with ``ParentBased(ALWAYS_OFF)``: only a sampled caller samples."""
    t = Telemetry(provider=TracerProvider(sampler=ParentBased(ALWAYS_OFF), shutdown_on_exit=False))
    yield t
    t.provider.shutdown()


def app(tel: Telemetry) -> CommBusCoordinator:
    """A coordinator whose handler publishes and queries on the bus, so a dispatch makes
    dispatch, attempt, producer and handler spans."""
    bus = InMemoryCommBus(query_timeout=5.0, logger=tel.logger, **tel.options)
    bus.subscribe("Stored", lambda e: None)
    bus.register_handler("GetState", lambda q: q.key)
    coordinator = CommBusCoordinator(tel.logger, bus)

    async def handler(e: Envelope) -> Envelope:
        await bus.publish(Stored())
        await bus.query(GetState())
        return e

    register(coordinator, handler=handler)
    return coordinator


async def dispatch_detached(coordinator: CommBusCoordinator, e: Envelope) -> None:
    """Dispatch ``e`` with no current trace context: only the envelope carries the caller."""
    await asyncio.create_task(coordinator.dispatch(target(), e), context=contextvars.Context())


def check_parents_exported(spans: list[ReadableSpan], caller_span: int) -> None:
    exported = {s.context.span_id for s in spans} | {caller_span}
    for s in spans:
        assert s.parent is not None and s.parent.span_id in exported, s.name


async def test_an_unsampled_carrier_exports_nothing(tel: Telemetry) -> None:
    coordinator = app(tel)
    await dispatch_detached(coordinator, envelope(trace_carrier=carrier("00")))
    assert tel.spans() == []


async def test_ids_alone_force_no_sampling(tel: Telemetry) -> None:
    """``trace_id``/``span_id`` without flags are no sampling decision: under
    ``ParentBased(ALWAYS_OFF)`` the dispatch is a root the sampler drops."""
    coordinator = app(tel)
    await dispatch_detached(coordinator, envelope(trace_id=TRACE, span_id=SPAN))
    assert tel.spans() == []


async def test_a_sampled_carrier_keeps_trace_id_tracestate_and_parents(tel: Telemetry) -> None:
    coordinator = app(tel)
    # the carrier wins over the ids next to it
    ids = {"trace_id": "1" * 32, "span_id": "2" * 16}
    await dispatch_detached(coordinator, envelope(trace_carrier=carrier("01"), **ids))
    spans = tel.spans()
    names = {s.name for s in spans}
    assert {"dispatch svc", "process svc", "publish Stored", "query GetState"} <= names
    assert {f"{s.context.trace_id:032x}" for s in spans} == {TRACE}
    assert {s.context.trace_state.to_header() for s in spans} == {"vendor=abc,other=1"}
    assert tel.span("dispatch svc").parent.span_id == int(SPAN, 16)  # type: ignore[union-attr]
    check_parents_exported(spans, int(SPAN, 16))


async def test_ids_alone_are_linked_from_a_sampled_root() -> None:
    tel = Telemetry(provider=TracerProvider(sampler=ALWAYS_ON, shutdown_on_exit=False))
    coordinator = app(tel)
    await dispatch_detached(coordinator, envelope(trace_id=TRACE, span_id=SPAN))
    span = tel.span("dispatch svc")
    assert span.parent is None
    assert f"{span.context.trace_id:032x}" != TRACE
    (link,) = span.links
    assert (f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}") == (TRACE, SPAN)
    tel.provider.shutdown()


async def test_trace_carrier_is_the_current_context(tel: Telemetry) -> None:
    token = otel_context.attach(propagate.extract(carrier("01")))
    try:
        made = trace_carrier()
    finally:
        otel_context.detach(token)
    assert made == carrier("01")
    rc = RequestContext(request_id="r", capability="c", trace_carrier=made)
    assert RequestContext.from_dict(rc.to_dict()) == rc
    assert trace_carrier() == {}


def test_a_carrier_is_bounded() -> None:
    with pytest.raises(ValueError):
        RequestContext(request_id="r", capability="c", trace_carrier={"tracestate": "x" * 9000})
    with pytest.raises(ValueError):
        RequestContext(
            request_id="r", capability="c", trace_carrier={str(i): "1" for i in range(9)}
        )
    with pytest.raises(ValueError):
        RequestContext(request_id="r", capability="c", trace_carrier={"a": 1})  # type: ignore[dict-item]
    for hostile in (5, "traceparent", ["a", "b"]):
        with pytest.raises(ValueError):
            RequestContext.from_dict(
                {"request_id": "r", "capability": "c", "trace_carrier": hostile}
            )


async def test_kinds_and_schema_follow_one_semconv_version() -> None:
    tel = Telemetry(provider=TracerProvider(sampler=ALWAYS_ON, shutdown_on_exit=False))
    await dispatch_detached(app(tel), envelope())
    kinds = {s.name: s.kind for s in tel.spans()}
    assert kinds == {
        "dispatch svc": SpanKind.PRODUCER,
        "process svc": SpanKind.CONSUMER,
        "publish Stored": SpanKind.PRODUCER,
        "process Stored": SpanKind.CONSUMER,
        "query GetState": SpanKind.PRODUCER,
        "process GetState": SpanKind.CONSUMER,
    }
    operation = {s.name: (s.attributes or {})["messaging.operation.type"] for s in tel.spans()}
    assert {operation[n] for n in kinds if n.startswith("process ")} == {"process"}
    assert {operation[n] for n in kinds if not n.startswith("process ")} == {"send"}
    assert {s.instrumentation_scope.schema_url for s in tel.spans()} == {SCHEMA_URL}  # type: ignore[union-attr]
    assert f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}" == SCHEMA_URL
    tel.provider.shutdown()


async def test_an_unsampled_dispatch_keeps_its_decision_current_in_the_handler(
    tel: Telemetry,
) -> None:
    """No attempt span under a dispatch span that does not record (the attempt runs with no
    hooks), yet the handler sees the dispatch's context: the caller's trace, not sampled."""
    seen: list[trace.SpanContext] = []
    coordinator = CommBusCoordinator(tel.logger, InMemoryCommBus(instrument=False), **tel.options)

    async def handler(e: Envelope) -> Envelope:
        seen.append(trace.get_current_span().get_span_context())
        return e

    register(coordinator, handler=handler)
    await dispatch_detached(coordinator, envelope(trace_carrier=carrier("00")))
    (context,) = seen
    assert f"{context.trace_id:032x}" == TRACE and not context.trace_flags.sampled
    assert context.span_id != int(SPAN, 16)  # the dispatch's own (dropped) span
    assert tel.spans() == []


_SET_BY: contextvars.ContextVar[str] = contextvars.ContextVar("set_by", default="caller")


@pytest.mark.parametrize("sampler", [ALWAYS_ON, ALWAYS_OFF], ids=["sampled", "unsampled"])
async def test_what_a_dispatch_handler_sets_in_its_context_stays_its_own_either_way(
    sampler: object,
) -> None:
    """Whether the caller sees a handler's context changes must not depend on the trace's
    sampling decision (it used to leak only when unsampled)."""
    from prometheus_client import CollectorRegistry

    provider = TracerProvider(sampler=sampler)  # type: ignore[arg-type]
    bus = InMemoryCommBus(registry=CollectorRegistry(), flow=False, tracer_provider=provider)
    coordinator = CommBusCoordinator(
        None, bus, registry=CollectorRegistry(), flow=False, tracer_provider=provider
    )

    async def handler(env: Envelope) -> Envelope:
        _SET_BY.set("handler")
        return env

    register(coordinator, handler=handler)
    _SET_BY.set("caller")
    await coordinator.dispatch(target(), envelope())
    assert _SET_BY.get() == "caller"
