"""What the OpenTelemetry messaging metrics cost per ``send``, side by side in one run.

Modes, interleaved round by round (metrics only: no flow recorder, no tracer provider):

- ``off``: ``instrument=False``;
- ``no_otel``: the built-in metrics with the OpenTelemetry piece removed (Prometheus only);
- ``no_provider``: the built-in metrics as built by default with no meter provider set
  (the OpenTelemetry piece present, skipping every recording);
- ``sdk``: the same with an SDK ``MeterProvider`` (in-memory reader) injected;
- reference: one SDK ``Counter.add`` and one ``Histogram.record`` with a four-attribute dict.

Run: ``.venv/bin/python benchmarks/bench_otel_metrics.py [--rounds 7] [--messages 20000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.observability import MetricsMiddleware


class DoThing:
    pass


async def _sends(bus: InMemoryCommBus, n: int) -> float:
    message = DoThing()
    start = time.perf_counter()
    for _ in range(n):
        await bus.send(message)
    return (time.perf_counter() - start) / n * 1e6


def _sdk_calls(provider: MeterProvider, n: int) -> tuple[float, float]:
    meter = provider.get_meter("bench")
    counter = meter.create_counter("bench.counter")
    histogram = meter.create_histogram("bench.histogram", unit="s")
    attrs = {"a": "x", "b": "send", "c": "DoThing", "d": "send"}
    start = time.perf_counter()
    for _ in range(n):
        counter.add(1, attrs)
    mid = time.perf_counter()
    for _ in range(n):
        histogram.record(0.001, attrs)
    end = time.perf_counter()
    return (mid - start) / n * 1e6, (end - mid) / n * 1e6


async def main(rounds: int, messages: int) -> None:
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)
    buses = {
        "off": InMemoryCommBus(instrument=False),
        "no_otel": InMemoryCommBus(registry=CollectorRegistry(), flow=False, tracing=False),
        "no_provider": InMemoryCommBus(registry=CollectorRegistry(), flow=False, tracing=False),
        "sdk": InMemoryCommBus(
            registry=CollectorRegistry(), flow=False, tracing=False, meter_provider=provider
        ),
    }
    for mw in buses["no_otel"].telemetry.middlewares:
        if isinstance(mw, MetricsMiddleware):
            mw.otel = None
    for bus in buses.values():
        bus.register_handler("DoThing", lambda c: None)
    results: dict[str, list[float]] = {name: [] for name in buses}
    results["sdk Counter.add"] = []
    results["sdk Histogram.record"] = []
    for _ in range(rounds):
        for name, bus in buses.items():
            results[name].append(await _sends(bus, messages))
        add, record = _sdk_calls(provider, messages)
        results["sdk Counter.add"].append(add)
        results["sdk Histogram.record"].append(record)
    for name, values in results.items():
        print(f"{name:22s} {statistics.median(values):8.3f} µs (median of {rounds})")
    provider.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--messages", type=int, default=20000)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.messages))
