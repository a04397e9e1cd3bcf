"""The built-in telemetry as an application would have it, counted: spans ended and
exported, and what the library's own metrics say at the end."""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

from jeeves_control_tower.observability import FlowRecorder


class CountingExporter(SpanExporter):
    """Drops every span, counting them (runs in the batch processor's worker thread)."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


class EndCounter(SpanProcessor):
    """Counts the spans ended (every one is then offered to the batch processor)."""

    def __init__(self) -> None:
        self.ended = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1


@dataclass
class Telemetry:
    provider: TracerProvider
    ends: EndCounter
    exporter: CountingExporter
    registry: CollectorRegistry
    flow: FlowRecorder

    def options(self) -> dict[str, Any]:
        return {"tracer_provider": self.provider, "registry": self.registry, "flow": self.flow}


def make_telemetry() -> Telemetry:
    """The default instrumentation with an SDK: batch span processor sized as in
    docs/observability.md, a private registry, a flow recorder of its own."""
    ends, exporter = EndCounter(), CountingExporter()
    provider = TracerProvider()
    provider.add_span_processor(ends)
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_queue_size=65536, max_export_batch_size=2048)
    )
    return Telemetry(provider, ends, exporter, CollectorRegistry(), FlowRecorder())


def settle(tel: Telemetry) -> None:
    """Before reading RSS: export what the batch processor holds (its queue is up to
    65,536 spans; how full it happens to be would otherwise decide the figure) and collect
    garbage. Blocks the loop for a moment (before the measured window, after the drain)."""
    tel.provider.force_flush(10_000)
    gc.collect()


def metric_sums(registry: CollectorRegistry) -> dict[str, Any]:
    """What the library's own metrics say, summed over message types and services."""
    out: dict[str, Any] = {
        "messages_by_outcome": Counter(),
        "messages_not_ok": {},  # pattern:outcome:message_type -> count
        "wire_frames": {},  # direction:pattern -> count (when the adapters count them)
        "dispatch_by_outcome": Counter(),
        "handler_errors": 0.0,
        "timeouts": 0.0,
        "telemetry_errors": 0.0,
        "dispatch_retries": 0.0,
        "wire_rejected": 0.0,
        "transport_reconnects": 0.0,
        "transport_redeliveries": 0.0,
        "inflight_at_end": 0.0,
        "service_load_at_end": 0.0,
    }
    simple = {
        "commbus_handler_errors_total": "handler_errors",
        "commbus_timeouts_total": "timeouts",
        "commbus_telemetry_errors_total": "telemetry_errors",
        "commbus_dispatch_retries_total": "dispatch_retries",
        "commbus_wire_rejected_total": "wire_rejected",
        "commbus_transport_reconnects_total": "transport_reconnects",
        "commbus_transport_redeliveries_total": "transport_redeliveries",
        "commbus_inflight_messages": "inflight_at_end",
        "commbus_service_load": "service_load_at_end",
    }
    for family in registry.collect():
        for s in family.samples:
            if s.name == "commbus_messages_total":
                key = f"{s.labels['pattern']}:{s.labels['outcome']}"
                out["messages_by_outcome"][key] += int(s.value)
                if s.labels["outcome"] != "ok" and s.value:
                    detail = f"{key}:{s.labels['message_type']}"
                    out["messages_not_ok"][detail] = int(s.value)
            elif s.name == "commbus_wire_messages_total":  # frames that crossed the broker
                key = f"{s.labels.get('direction')}:{s.labels.get('pattern')}"
                out["wire_frames"][key] = out["wire_frames"].get(key, 0) + int(s.value)
            elif s.name == "commbus_dispatch_total":
                out["dispatch_by_outcome"][s.labels["outcome"]] += int(s.value)
            elif s.name in simple:
                out[simple[s.name]] += s.value
    out["messages_by_outcome"] = dict(sorted(out["messages_by_outcome"].items()))
    out["dispatch_by_outcome"] = dict(sorted(out["dispatch_by_outcome"].items()))
    return out
