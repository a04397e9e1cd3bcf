"""A tracer that hands back the caller's span context (a provider that
disables this package's tracer) must not replace the caller's span in the handler.

Such a tracer (``trace.NoOpTracer`` from a provider that is not ``NoOpTracerProvider``, or an
SDK tracer disabled by a tracer configurator) returns ``NonRecordingSpan(current context)``:
a new object carrying the current span's own context, no sampling decision of its own. The
bus and the coordinator used to compare it with the current span and leave the caller's span
current; treating every injected (or global) provider as an SDK whose non-recording spans
are always new made the handler see a non-recording copy instead, so what the handler
records on its current span was lost.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.types import Envelope

from .conftest import Telemetry
from .support import GetState, envelope, register, target

SCOPE = "jeeves_control_tower"


class ScopeFilter(trace.TracerProvider):
    """A provider that turns off the tracers of ``deny`` (the no-op tracer) and hands out
    ``delegate``'s otherwise: a common way to silence one instrumentation."""

    def __init__(self, delegate: trace.TracerProvider, deny: set[str]) -> None:
        self._delegate = delegate
        self._deny = deny

    def get_tracer(self, instrumenting_module_name: str, *args: Any, **kw: Any) -> trace.Tracer:
        if instrumenting_module_name in self._deny:
            return trace.NoOpTracer()
        return self._delegate.get_tracer(instrumenting_module_name, *args, **kw)


async def test_a_disabled_bus_tracer_keeps_the_callers_span_current(tel: Telemetry) -> None:
    provider = ScopeFilter(tel.provider, {SCOPE})
    bus = InMemoryCommBus(registry=CollectorRegistry(), flow=False, tracer_provider=provider)
    seen: list[Any] = []

    def handler(q: GetState) -> int:
        span = trace.get_current_span()
        span.set_attribute("handled", True)
        seen.append(span)
        return 3

    bus.register_handler("GetState", handler)
    with tel.provider.get_tracer("app").start_as_current_span("caller") as caller:
        assert await bus.query(GetState()) == 3
        assert trace.get_current_span() is caller
    assert seen == [caller]
    assert [s.name for s in tel.spans()] == ["caller"]
    assert dict(tel.span("caller").attributes or {}) == {"handled": True}


async def test_a_disabled_dispatch_tracer_keeps_the_callers_span_current(
    tel: Telemetry,
) -> None:
    provider = ScopeFilter(tel.provider, {SCOPE})
    bus = InMemoryCommBus(instrument=False)
    coordinator = CommBusCoordinator(
        None, bus, registry=CollectorRegistry(), flow=False, tracer_provider=provider
    )
    seen: list[Any] = []

    async def handler(env: Envelope) -> Envelope:
        seen.append(trace.get_current_span())
        return env

    register(coordinator, handler=handler)
    with tel.provider.get_tracer("app").start_as_current_span("caller") as caller:
        await coordinator.dispatch(target(), envelope())
        assert trace.get_current_span() is caller
    assert seen == [caller]
    assert [s.name for s in tel.spans()] == ["caller"]
