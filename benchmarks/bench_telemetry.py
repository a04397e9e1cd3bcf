"""Per-message cost of the built-in telemetry, measured side by side in one run.

For publish (1 and 10 subscribers), send, query and dispatch, the median cost in µs per
message of:

- ``floor``: ``await handler(msg)`` (dispatch: ``await handler(envelope)``), no bus;
- ``off``: the bus/coordinator built with ``instrument=False``;
- ``on``: the built-in telemetry: an SDK ``TracerProvider`` with a ``BatchSpanProcessor``
  (its exporter drops the batches), a private Prometheus registry, a flow recorder;
- ``on_unsampled``: the same with a sampler that records nothing (metrics + flow, and the
  price of not-sampled spans);
- ``no_sdk``: the built-in telemetry with no tracer provider configured anywhere (the
  global no-op tracer: metrics + flow only), what ``get_commbus()`` costs out of the box.

Handlers never suspend (the bus's eager path), so the figures are the bus's own overhead.
Run: ``.venv/bin/python benchmarks/bench_telemetry.py [--quick]``; writes
``benchmarks/results/telemetry.json``. Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.logging import NullLogger
from jeeves_control_tower.observability import FlowRecorder
from jeeves_control_tower.types import DispatchTarget, Envelope, RequestContext, ServiceDescriptor

RESULTS = Path(__file__).parent / "results" / "telemetry.json"
CASES = ("publish_1", "publish_10", "send", "query", "dispatch")
MODES = ("floor", "off", "on", "on_unsampled", "no_sdk")


@dataclass
class Ping:
    n: int


class DropExporter(SpanExporter):
    """Accepts every batch and throws it away."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


async def handler(message: Any) -> Any:
    return message


def build(mode: str) -> tuple[InMemoryCommBus, CommBusCoordinator, TracerProvider | None]:
    if mode == "off":
        bus = InMemoryCommBus(logger=NullLogger(), instrument=False)
        coord = CommBusCoordinator(NullLogger(), bus, instrument=False)
        return bus, coord, None
    provider = None
    if mode != "no_sdk":
        provider = TracerProvider(sampler=ALWAYS_ON if mode == "on" else ALWAYS_OFF)
        # A queue big enough for one repetition: every span is exported, none dropped.
        processor = BatchSpanProcessor(DropExporter(), max_queue_size=1 << 16)
        provider.add_span_processor(processor)
    options: dict[str, Any] = {
        "tracer_provider": provider,
        "registry": CollectorRegistry(),
        "flow": FlowRecorder(),
    }
    bus = InMemoryCommBus(logger=NullLogger(), **options)
    coord = CommBusCoordinator(NullLogger(), bus, **options)
    return bus, coord, provider


class Runner:
    """Sends ``n`` messages of one case through one mode; ``settle`` runs untimed after each
    repetition (it flushes the batch processor so no export spills into the next timing)."""

    def __init__(self, case: str, mode: str, n: int) -> None:
        self.case, self.mode, self.n = case, mode, n
        self.msg = Ping(1)
        self.envelopes = [Envelope(RequestContext(f"r{i}", "bench")) for i in range(n)]
        self.target = DispatchTarget("svc", "run")
        self.provider: TracerProvider | None = None
        if mode == "floor":
            return
        self.bus, self.coord, self.provider = build(mode)
        for _ in range(10 if case == "publish_10" else 1):
            self.bus.subscribe("Ping", handler)
        self.bus.register_handler("Ping", handler)
        self.coord.register_service(ServiceDescriptor(name="svc", service_type="bench"))
        self.coord.register_handler("svc", handler)

    async def run(self) -> None:
        case, n, msg = self.case, self.n, self.msg
        if self.mode == "floor":
            fanout = 10 if case == "publish_10" else 1
            payload: Sequence[Any] = self.envelopes if case == "dispatch" else [msg] * n
            for m in payload:
                for _ in range(fanout):
                    await handler(m)
        elif case.startswith("publish"):
            for _ in range(n):
                await self.bus.publish(msg)
        elif case == "send":
            for _ in range(n):
                await self.bus.send(msg)
        elif case == "query":
            for _ in range(n):
                await self.bus.query(msg)
        else:
            for env in self.envelopes:
                env.processing_history.clear()
                await self.coord.dispatch(self.target, env)

    def settle(self) -> None:
        if self.provider is not None:
            self.provider.force_flush()

    def close(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


async def measure(case: str, n: int, repetitions: int) -> dict[str, list[float]]:
    """Per-message µs of every mode; the modes take turns within each repetition so that
    background noise falls on all of them alike."""
    runners = [Runner(case, mode, n) for mode in MODES]
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        for r in runners:  # warm up caches and code paths
            await r.run()
            r.settle()
        for _ in range(repetitions):
            for r in runners:
                gc.collect()
                start = time.perf_counter_ns()
                await r.run()
                samples[r.mode].append((time.perf_counter_ns() - start) / n / 1000.0)
                r.settle()
    finally:
        for r in runners:
            r.close()
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages (smoke run)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    n, repetitions = (300, 3) if args.quick else (2000, 7)
    results: dict[str, dict[str, float]] = {}
    minimums: dict[str, dict[str, float]] = {}
    began = time.perf_counter()
    for case in CASES:
        count = n // 4 if case == "publish_10" else n
        samples = asyncio.run(measure(case, count, repetitions))
        results[case] = {m: round(statistics.median(v), 2) for m, v in samples.items()}
        minimums[case] = {m: round(min(v), 2) for m, v in samples.items()}
    elapsed = time.perf_counter() - began
    header = f"{'µs / message':<12}" + "".join(f"{m:>14}" for m in MODES) + f"{'on - off':>12}"
    print(header)
    print("-" * len(header))
    for case, row in results.items():
        cells = "".join(f"{row[m]:>14.2f}" for m in MODES)
        print(f"{case:<12}{cells}{row['on'] - row['off']:>12.2f}")
    print(
        f"\n(median of {repetitions} runs of {n} messages, {n // 4} for publish_10; {elapsed:.1f}s)"
    )
    report = {
        "unit": "microseconds per message (median)",
        "messages_per_run": n,
        "repetitions": repetitions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "modes": {
            "floor": "await handler(msg) directly",
            "off": "instrument=False",
            "on": "SDK TracerProvider + BatchSpanProcessor (dropping exporter) + Prometheus + flow",
            "on_unsampled": "as 'on' with the ALWAYS_OFF sampler",
            "no_sdk": "as 'on' with no tracer provider configured (global no-op tracer)",
        },
        "results": results,
        "minimums": minimums,
        "elapsed_seconds": round(elapsed, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
