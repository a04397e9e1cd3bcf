"""The cost floor of the telemetry's building blocks, measured in isolation.

What one OpenTelemetry SDK span and one prometheus_client update cost on this machine,
without the bus around them: the part of the instrumented path that is not ours (see
``docs/performance.md``). Prints medians in µs.

Run: ``.venv/bin/python benchmarks/bench_sdk_floor.py [--rounds 5] [--iterations 20000]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ATTRIBUTES = {
    "messaging.system": "jeeves.commbus",
    "messaging.operation.type": "send",
    "messaging.operation.name": "publish",
    "messaging.destination.name": "Ev",
}


class NullExporter(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def tracer(sampled: bool = True, batch: bool = True) -> trace.Tracer:
    provider = TracerProvider() if sampled else TracerProvider(sampler=ALWAYS_OFF)
    if batch:
        provider.add_span_processor(
            BatchSpanProcessor(NullExporter(), max_queue_size=65536, max_export_batch_size=2048)
        )
    return provider.get_tracer("bench")


def cases() -> dict[str, Callable[[int], None]]:
    batch, bare, off = tracer(), tracer(batch=False), tracer(sampled=False)

    def span(t: trace.Tracer, attributes: bool, attach: bool) -> Callable[[int], None]:
        def run(n: int) -> None:
            attrs = ATTRIBUTES if attributes else None
            for _ in range(n):
                s = t.start_span("publish Ev", None, SpanKind.PRODUCER, attrs)
                if attach:
                    otel_context.detach(otel_context.attach(trace.set_span_in_context(s)))
                s.end()

        return run

    registry = CollectorRegistry()
    counter = Counter("c", "c", ["a"], registry=registry).labels("x")
    gauge = Gauge("g", "g", ["a"], registry=registry).labels("x")
    histogram = Histogram("h", "h", ["a"], registry=registry).labels("x")
    exemplar = {"trace_id": "0123456789abcdef0123456789abcdef"}

    def counter_inc(n: int) -> None:
        for _ in range(n):
            counter.inc()

    def gauge_inc_dec(n: int) -> None:
        for _ in range(n):
            gauge.inc()
            gauge.dec()

    def observe(n: int) -> None:
        for _ in range(n):
            histogram.observe(0.00002)

    def observe_exemplar(n: int) -> None:
        for _ in range(n):
            histogram.observe(0.00002, exemplar)

    return {
        "span start+end, batch processor": span(batch, False, False),
        "span start+end, no processor": span(bare, False, False),
        "span start+end, ALWAYS_OFF sampler": span(off, False, False),
        "span + 4 attributes, batch processor": span(batch, True, False),
        "span + 4 attributes + attach/detach, batch": span(batch, True, True),
        "span + 4 attributes + attach/detach, ALWAYS_OFF": span(off, True, True),
        "prometheus counter child inc": counter_inc,
        "prometheus gauge child inc + dec": gauge_inc_dec,
        "prometheus histogram child observe": observe,
        "prometheus histogram observe with exemplar": observe_exemplar,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=20_000)
    args = parser.parse_args(argv)
    all_cases = cases()
    samples: dict[str, list[float]] = {name: [] for name in all_cases}
    for _ in range(args.rounds):  # interleaved, so noise hits every case alike
        for name, run in all_cases.items():
            t0 = time.perf_counter()
            run(args.iterations)
            samples[name].append((time.perf_counter() - t0) / args.iterations * 1e6)
    for name, xs in samples.items():
        print(f"{name:<50}{statistics.median(xs):>8.2f} µs")


if __name__ == "__main__":
    main()
