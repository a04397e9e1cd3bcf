"""Before/after of a core change in one run: the hot path of two source trees side by side.

Loads this checkout's ``jeeves_control_tower`` and a second copy of the package (another
revision's ``src/jeeves_control_tower``, e.g. from ``git archive``) side by side in one
process, under another package name, and measures the same cases as :mod:`bench_hotpath`
(publish to 1 and 10 subscribers, send, query, dispatch; handlers that never suspend), and
publish and query through a transport that accepts at once (``publish_out``,
``query_out``: the bus's own cost on the way out) and in from a transport (``publish_in``,
``query_in``), for both, interleaved round by round so
that the noise of a shared machine hits both alike. ``--mode`` picks the column: ``off``
(``instrument=False``, the default), ``metrics`` (the built-in metrics and flow,
``tracing=False``), ``no_sdk`` (the built-in telemetry, no tracer provider) or ``on``
(every message traced by an SDK provider with a batch processor exporting nowhere). Prints
µs/message (median over rounds) and the change after/before.

Run::

    git archive <base> | tar -x -C /tmp/before
    .venv/bin/python benchmarks/bench_core_ab.py /tmp/before/src/jeeves_control_tower
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import bench_hotpath  # benchmarks/ (run from this folder, as bench_load's load/)
from bench_hotpath import Ask, Ev, Loop

CASES = (
    "publish_1",
    "publish_10",
    "send",
    "query",
    "dispatch",
    "publish_out",
    "query_out",
    "publish_in",
    "query_in",
)


class NoBroker:
    """A transport that accepts everything at once: what the bus costs on the way out."""

    system = "nobroker"

    async def publish(self, ctx: Any, message: Any) -> None:
        return None

    async def send(self, ctx: Any, message: Any) -> None:
        return None

    async def query(self, ctx: Any, message: Any, timeout: float) -> Any:
        return 1


def load_as(name: str, package_dir: Path) -> ModuleType:
    """Import the package in ``package_dir`` as ``name`` (its imports are relative)."""
    spec = importlib.util.spec_from_file_location(
        name, package_dir / "__init__.py", submodule_search_locations=[str(package_dir)]
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"not a package: {package_dir}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def telemetry_options(mode: str) -> dict[str, Any]:
    """The bus/coordinator keywords of ``mode`` (a fresh private registry each call)."""
    if mode == "off":
        return {"instrument": False}
    from prometheus_client import CollectorRegistry

    options: dict[str, Any] = {"registry": CollectorRegistry()}
    if mode == "metrics":
        options["tracing"] = False
    if mode == "on":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class Nowhere(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(
            BatchSpanProcessor(Nowhere(), max_queue_size=65536, max_export_batch_size=2048)
        )
        options["tracer_provider"] = provider
    return options


def build_cases(package: str, mode: str) -> dict[str, Loop]:
    """The cases of ``bench_hotpath`` in ``mode`` on the package imported as ``package``,
    plus the way out to a transport and the way in from one."""
    ipc = importlib.import_module(f"{package}.ipc")
    null = importlib.import_module(f"{package}.logging").NullLogger
    opts = telemetry_options(mode)
    cases = bench_hotpath.build_cases(opts, package)

    async def handler(msg: Any) -> int:
        return 1

    bus_out = ipc.InMemoryCommBus(logger=null(), **telemetry_options(mode))
    bus_out.attach_transport(NoBroker())
    bus_in = ipc.InMemoryCommBus(logger=null(), **opts)
    bus_in.subscribe("Ev", handler)
    bus_in.register_handler("Ask", handler)
    ev, ask = Ev(), Ask()

    async def publish_out(n: int) -> None:
        for _ in range(n):
            await bus_out.publish(ev)

    async def query_out(n: int) -> None:
        for _ in range(n):
            await bus_out.query(ask)

    # what a transport calls for a message from its broker (named deliver_local before)
    incoming = getattr(bus_in, "deliver_incoming", None) or bus_in.deliver_local

    async def publish_in(n: int) -> None:
        for _ in range(n):
            await incoming("publish", ev)

    async def query_in(n: int) -> None:
        for _ in range(n):
            await incoming("query", ask, timeout=30.0)

    cases.update(
        publish_out=publish_out, query_out=query_out, publish_in=publish_in, query_in=query_in
    )
    assert tuple(cases) == CASES
    return cases


async def measure(sides: dict[str, dict[str, Loop]], rounds: int, messages: int) -> Any:
    samples: dict[tuple[str, str], list[float]] = {}
    for cases in sides.values():  # warm-up
        for loop in cases.values():
            await loop(messages // 10)
    for r in range(rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for case in CASES:
            for side in order:
                t0 = time.perf_counter()
                await sides[side][case](messages)
                samples.setdefault((side, case), []).append(
                    (time.perf_counter() - t0) / messages * 1e6
                )
    return {key: statistics.median(xs) for key, xs in samples.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="the other tree's jeeves_control_tower dir")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--mode", choices=("off", "metrics", "no_sdk", "on"), default="off")
    args = parser.parse_args(argv)
    load_as("jct_before", args.before.resolve())
    sides = {
        "before": build_cases("jct_before", args.mode),
        "after": build_cases("jeeves_control_tower", args.mode),
    }
    medians = asyncio.run(measure(sides, args.rounds, args.messages))
    print(f"mode {args.mode}, {args.rounds} rounds of {args.messages} messages")
    print(f"{'case':<12}{'before µs':>11}{'after µs':>10}{'change':>9}")
    for case in CASES:
        before, after = medians["before", case], medians["after", case]
        print(f"{case:<12}{before:>11.3f}{after:>10.3f}{(after / before - 1) * 100:>+8.1f}%")


if __name__ == "__main__":
    main()
