"""Soak benchmark: a million mixed messages through the instrumented bus; memory must stay flat.

Drives publish (fan-out to 3 subscribers), send, query and dispatch in a fixed mix, with the
built-in telemetry on (SDK tracer provider + batch span processor + Prometheus into a private
registry + the flow recorder). Resident memory is sampled after a warm-up and at the end;
the growth is reported (the target is "a few MB"). Handlers suspend now and then, so both the
eager and the task paths are exercised.

Run: ``.venv/bin/python benchmarks/bench_soak.py [--messages 1000000]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from procstats import rss_mb  # benchmarks/procstats.py (run from this folder)

from jeeves_control_tower.ipc import CommBusCoordinator, DynamicEvent, DynamicQuery, InMemoryCommBus
from jeeves_control_tower.logging import NullLogger
from jeeves_control_tower.types import DispatchTarget, Envelope, RequestContext, ServiceDescriptor

RESULTS = Path(__file__).parent / "results" / "soak.json"


def telemetry_options() -> dict[str, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from prometheus_client import CollectorRegistry

    class Discard(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(Discard(), max_queue_size=65536, max_export_batch_size=2048)
    )
    return {"tracer_provider": provider, "registry": CollectorRegistry()}


async def soak(messages: int, warmup: int) -> dict[str, Any]:
    opts = telemetry_options()
    bus = InMemoryCommBus(logger=NullLogger(), **opts)
    coordinator = CommBusCoordinator(NullLogger(), bus, **opts)
    coordinator.register_service(ServiceDescriptor(name="svc", service_type="worker"))
    counter = 0

    async def sub(event: DynamicEvent) -> None:
        if event.payload["n"] % 16 == 0:
            await asyncio.sleep(0)

    async def on_command(cmd: DynamicEvent) -> None:
        nonlocal counter
        counter += 1

    async def on_query(q: DynamicQuery) -> int:
        if q.payload["n"] % 32 == 0:
            await asyncio.sleep(0)
        return int(q.payload["n"])

    async def on_dispatch(env: Envelope) -> Envelope:
        return env

    for _ in range(3):
        bus.subscribe("Tick", sub)
    bus.register_handler("Work", on_command)
    bus.register_handler("Ask", on_query)
    coordinator.register_handler("svc", on_dispatch)
    target = DispatchTarget(service_name="svc", method="run")

    async def one(n: int) -> None:
        kind = n % 4
        if kind == 0:
            await bus.publish(DynamicEvent("Tick", {"n": n}))
        elif kind == 1:
            await bus.send(DynamicEvent("Work", {"n": n}))
        elif kind == 2:
            assert await bus.query(DynamicQuery("Ask", {"n": n})) == n
        else:
            env = Envelope(request_context=RequestContext(request_id=f"r{n}", capability="c"))
            assert not (await coordinator.dispatch(target, env)).terminated

    for n in range(warmup):
        await one(n)
    gc.collect()
    before = rss_mb()
    t0 = time.perf_counter()
    samples = []
    for n in range(warmup, warmup + messages):
        await one(n)
        if n % 100_000 == 0:
            samples.append(round(rss_mb(), 1))
    elapsed = time.perf_counter() - t0
    gc.collect()
    after = rss_mb()
    opts["tracer_provider"].shutdown()
    return {
        "messages": messages,
        "warmup": warmup,
        "seconds": round(elapsed, 1),
        "us_per_message": round(elapsed / messages * 1e6, 2),
        "rss_mb_after_warmup": round(before, 1),
        "rss_mb_end": round(after, 1),
        "rss_growth_mb": round(after - before, 2),
        # after the first 100,000 measured messages: allocator arenas and the span
        # processor's queue have reached their working size by then
        "rss_growth_steady_mb": round(after - samples[0], 2) if samples else None,
        "rss_samples_mb": samples,
        "commands_handled": counter,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--warmup", type=int, default=100_000)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = asyncio.run(soak(args.messages, args.warmup))
    print(json.dumps(result, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
