"""Telemetry never breaks the application: broken exporters, processors, metrics and flow
sinks leave publish, send, query and dispatch working, and are counted and logged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.observability import FlowRecorder
from jeeves_control_tower.observability._guard import ErrorReporter
from jeeves_control_tower.types import Envelope
from tests.helpers import ListLogger

from .support import DoThing, GetState, Stored, envelope, register, target


class FailingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise ConnectionError("collector down")


class RaisingProcessor(SpanProcessor):
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        raise RuntimeError("on_start")

    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("on_end")


def boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("metrics backend down")


async def exercise(
    instrumented_bus: InMemoryCommBus, instrumented_coordinator: CommBusCoordinator
) -> None:
    """Every pattern and a dispatch, with their results checked."""
    seen: list[Any] = []

    async def handle(e: Envelope) -> Envelope:
        e.outputs["done"] = True
        return e

    instrumented_bus.subscribe("Stored", seen.append)
    instrumented_bus.register_handler("DoThing", seen.append)
    instrumented_bus.register_handler("GetState", lambda q: "state")
    register(instrumented_coordinator, handler=handle)
    before = trace.get_current_span()
    await instrumented_bus.publish(Stored())
    await instrumented_bus.send(DoThing())
    assert await instrumented_bus.query(GetState()) == "state"
    result = await instrumented_coordinator.dispatch(target(), envelope())
    assert result.outputs == {"done": True} and not result.terminated
    assert [type(m).__name__ for m in seen] == ["Stored", "DoThing"]
    assert trace.get_current_span() is before
    instrumented_coordinator.unregister_service("svc")


def build(provider: TracerProvider, **kw: Any) -> tuple[InMemoryCommBus, CommBusCoordinator, Any]:
    registry = CollectorRegistry()
    logger = ListLogger()
    bus = InMemoryCommBus(logger=logger, tracer_provider=provider, registry=registry, **kw)
    coordinator = CommBusCoordinator(logger, bus)
    return bus, coordinator, (registry, logger)


def errors(registry: CollectorRegistry, component: str) -> float:
    return (
        registry.get_sample_value("commbus_telemetry_errors_total", {"component": component}) or 0
    )


@pytest.fixture
def provider() -> Any:
    p = TracerProvider(shutdown_on_exit=False)
    yield p
    p.shutdown()


async def test_failing_exporter(provider: TracerProvider, caplog: pytest.LogCaptureFixture) -> None:
    provider.add_span_processor(SimpleSpanProcessor(FailingExporter()))
    bus, coordinator, _ = build(provider)
    await exercise(bus, coordinator)
    assert "Exception while exporting Span" in caplog.text  # the SDK's own log line


async def test_raising_span_processor(provider: TracerProvider) -> None:
    provider.add_span_processor(RaisingProcessor())
    bus, coordinator, (registry, logger) = build(provider)
    await exercise(bus, coordinator)
    assert errors(registry, "tracing") >= 4
    failures = [f for lv, m, f in logger.records if m == "telemetry_failed"]
    assert failures and failures[0]["component"] == "tracing"
    assert len(failures) == 1  # rate-limited: one line per component per interval


async def test_raising_metrics_backend(provider: TracerProvider) -> None:
    bus, coordinator, (registry, _) = build(provider)
    metrics = bus.telemetry.metrics
    # the label limiters are on both paths (aggregate and multiprocess), the rest on the latter
    for name in ("bus_series", "dispatch_series", "inflight_for", "message_types", "services"):
        setattr(metrics, name, boom)

    class Broken:
        labels = remove = staticmethod(boom)

    for name in ("service_load", "service_capacity", "service_queue_depth", "service_healthy"):
        setattr(metrics, name, Broken())
    metrics.services_registered = Broken()
    coordinator = CommBusCoordinator(None, bus)
    await exercise(bus, coordinator)
    # every failing path reports (a dispatch's slot taken / given back reaches no metrics
    # code: the gauges read the registry's descriptor when scraped)
    assert errors(registry, "metrics") >= 6


async def test_broken_flow_sink(provider: TracerProvider) -> None:
    def sink(record: dict[str, Any]) -> None:
        raise OSError("disk full")

    flow = FlowRecorder(sink=sink)
    bus, coordinator, (registry, _) = build(provider, flow=flow)
    await exercise(bus, coordinator)
    assert errors(registry, "flow_sink") == 4
    assert flow.last_seq == 4  # the records were kept all the same


async def test_broken_flow_recorder(provider: TracerProvider) -> None:
    flow = FlowRecorder()
    bus, coordinator, (registry, _) = build(provider, flow=flow)
    flow.handoff = None  # type: ignore[assignment]  # every record now fails to be stored
    flow._lock = None  # type: ignore[assignment]  # and so does every locked step
    await exercise(bus, coordinator)
    assert errors(registry, "flow") >= 4  # one per message at least, none raised


def test_reporter_never_raises() -> None:
    class Hostile(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    logger = ListLogger()
    reporter = ErrorReporter(logger, counter=object())  # a "counter" without .labels
    reporter("tracing", "before", Hostile())
    reporter = ErrorReporter(logger)
    reporter("tracing", "before", Hostile())
    # logged both times: a broken counter does not swallow the log line
    assert [f["error"] for _, m, f in logger.records if m == "telemetry_failed"] == [
        "<unprintable>",
        "<unprintable>",
    ]
    assert reporter.count == 1


def test_a_failing_error_counter_does_not_hide_the_log_line() -> None:
    """The counter may live on the backend that failed (a broken multiprocess directory)."""

    class Broken:
        def labels(self, *values: str) -> Any:
            raise OSError("metrics backend gone")

    logger = ListLogger()
    reporter = ErrorReporter(logger, counter=Broken())
    reporter("metrics", "publish", RuntimeError("write failed"))
    assert [(f["component"], f["error"]) for _, m, f in logger.records] == [
        ("metrics", "write failed")
    ]
    assert reporter.count == 1
