"""Where the "every span sampled" ratio of ``bench_telemetry_cost.py`` goes: the time spent
inside the SDK's ``Tracer.start_span`` and ``Span.end`` against the time outside them, for an
instrumented send / query / dispatch ("on": spans, metrics and flow) and for the SDK's own
spans of the same operation (the reference of that ratio), side by side in one run.

The SDK's two methods are wrapped at class level with a clock read before and after (both
sides pay the wrapper alike; the spans stay the SDK's own objects). "outside" is what the
bus or coordinator, its metrics, flow and span glue add around the SDK's work, against
the reference's own glue (context attach / detach, attributes, the awaited handler).
Diagnostic only; the targets are in ``bench_telemetry_cost.py``. Run:
``PYTHONPATH=$PWD/src:$PWD .venv/bin/python benchmarks/bench_span_glue.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_hotpath import Telemetry, build_cases
from bench_telemetry_cost import sdk_cases

OPS = ("send", "query", "dispatch")
_inside = [0.0]


def time_the_sdk() -> None:
    """Count the time spent in ``Tracer.start_span`` and ``Span.end`` into ``_inside``."""
    from opentelemetry.sdk.trace import Span, Tracer

    clock = time.perf_counter
    start_span, end = Tracer.start_span, Span.end

    def timed_start_span(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = clock()
        try:
            return start_span(self, *args, **kwargs)
        finally:
            _inside[0] += clock() - t0

    def timed_end(self: Any, *args: Any, **kwargs: Any) -> None:
        t0 = clock()
        try:
            end(self, *args, **kwargs)
        finally:
            _inside[0] += clock() - t0

    Tracer.start_span = timed_start_span  # type: ignore[method-assign]
    Span.end = timed_end  # type: ignore[method-assign]


async def run(rounds: int, messages: int, collect: bool = True) -> dict[str, dict[str, float]]:
    time_the_sdk()
    on, off = Telemetry(), Telemetry(sampled=False)
    ours = build_cases(on.options())
    reference = sdk_cases(on.provider, off.provider)
    cases = {f"{op}/on": ours[op] for op in OPS}
    cases.update({f"{op}/sdk": reference[f"sdk/{op}"] for op in OPS})
    for loop in cases.values():  # warm-up
        await loop(1000)
    totals: dict[str, list[float]] = {name: [] for name in cases}
    inside: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, loop in cases.items():
            _inside[0] = 0.0
            if not collect:
                gc.collect()
                gc.disable()
            t0 = time.perf_counter()
            await loop(messages)
            gc.enable()
            totals[name].append((time.perf_counter() - t0) / messages * 1e6)
            inside[name].append(_inside[0] / messages * 1e6)
    return {
        name: {
            "total": statistics.median(totals[name]),
            "inside": statistics.median(inside[name]),
            "outside": statistics.median(
                t - i for t, i in zip(totals[name], inside[name], strict=True)
            ),
        }
        for name in cases
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument(
        "--no-gc", action="store_true", help="collect before each case, then no collection in it"
    )
    args = parser.parse_args(argv)
    us = asyncio.run(run(args.rounds, args.messages, collect=not args.no_gc))
    print(f"{'µs per message':<16}{'total':>9}{'in SDK':>9}{'outside':>9}")
    for name, row in us.items():
        print(f"{name:<16}{row['total']:>9.2f}{row['inside']:>9.2f}{row['outside']:>9.2f}")
    for op in OPS:
        a, b = us[f"{op}/on"], us[f"{op}/sdk"]
        total, sdk = a["total"] / b["total"], a["inside"] / b["inside"]
        print(f"{op}: total {total:.2f}x; in the SDK {sdk:.2f}x;", end="")
        print(f" outside +{a['outside'] - b['outside']:.2f} µs")


if __name__ == "__main__":
    main()
