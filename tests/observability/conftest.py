"""Fixtures for the telemetry tests: a private registry, an in-memory span exporter on a
private tracer provider, a private flow recorder, and an ``instrumented_bus`` and
``instrumented_coordinator`` wired to them (named apart from the plain ``bus`` and
``coordinator`` of tests/conftest.py).
Nothing here touches the global tracer provider or ``prometheus_client.REGISTRY``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus, RetryPolicy
from jeeves_control_tower.observability import FlowRecorder
from tests.helpers import ListLogger


@dataclass
class Telemetry:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    exporter: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)
    provider: TracerProvider = field(default_factory=lambda: TracerProvider(shutdown_on_exit=False))
    flow: FlowRecorder = field(default_factory=FlowRecorder)
    logger: ListLogger = field(default_factory=ListLogger)

    def __post_init__(self) -> None:
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    @property
    def options(self) -> dict[str, Any]:
        return {"registry": self.registry, "tracer_provider": self.provider, "flow": self.flow}

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        found = [s for s in self.spans() if s.name == name]
        assert len(found) == 1, (
            f"{len(found)} spans named {name!r}: {[s.name for s in self.spans()]}"
        )
        return found[0]

    def sample(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


@pytest.fixture
def tel() -> Iterator[Telemetry]:
    t = Telemetry()
    yield t
    t.provider.shutdown()


@pytest.fixture
def instrumented_bus(tel: Telemetry) -> InMemoryCommBus:
    return InMemoryCommBus(query_timeout=5.0, logger=tel.logger, **tel.options)


@pytest.fixture
def instrumented_coordinator(
    tel: Telemetry, instrumented_bus: InMemoryCommBus
) -> CommBusCoordinator:
    return CommBusCoordinator(
        tel.logger,
        instrumented_bus,
        retry_policy=RetryPolicy(initial_delay=0.001, max_delay=0.01, jitter_floor=1.0),
    )
