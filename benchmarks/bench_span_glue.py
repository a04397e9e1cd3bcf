"""Where the "every span sampled" ratio of ``bench_telemetry_cost.py`` goes: the time spent
inside the SDK's ``Tracer.start_span`` and ``Span.end`` against the time outside them, for an
instrumented send / query / dispatch ("on": spans, metrics and flow) and for the SDK's own
spans of the same operation (the reference of that ratio), side by side in one run.

The SDK's two methods are wrapped at class level with a clock read before and after (both
sides pay the wrapper alike; the spans stay the SDK's own objects). "outside" is what the
bus or coordinator, its metrics, flow and span glue add around the SDK's work, against
the reference's own glue (context attach / detach, attributes, the awaited handler).
Each round runs every case once in an order drawn anew (a fixed seed); "total" is the
median over the rounds of each round's ratio.
The same cases run once more on a tracer whose spans cost nothing (``free``: one span object
handed out again, recording, no SDK): what the instrumented side then adds over the
reference is the glue's own cost. Had the two costs simply added up, the ratio would be
``(reference + that glue) / reference``; the report prints that estimate beside the ratio
measured. Diagnostic only; the targets are in ``bench_telemetry_cost.py``. Run:
``PYTHONPATH=$PWD/src:$PWD .venv/bin/python benchmarks/bench_span_glue.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_hotpath import Telemetry, build_cases
from bench_telemetry_cost import sdk_cases
from opentelemetry import trace

OPS = ("send", "query", "dispatch")
SEED = 15  # the shuffle of each round's case order
_inside = [0.0]


def time_the_sdk() -> None:
    """Count the time spent in ``Tracer.start_span`` and ``Span.end`` into ``_inside``."""
    from opentelemetry.sdk.trace import Span, Tracer

    if getattr(Tracer.start_span, "timed", False):
        return  # wrapped already (a second run in this process)
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

    timed_start_span.timed = True  # type: ignore[attr-defined]
    Tracer.start_span = timed_start_span  # type: ignore[method-assign]
    Span.end = timed_end  # type: ignore[method-assign]


class FreeSpan(trace.Span):
    """A recording span that does nothing (one object, handed out for every span)."""

    _context = trace.SpanContext(1, 2, False, trace.TraceFlags(trace.TraceFlags.SAMPLED))

    def end(self, end_time: int | None = None) -> None:
        return None

    def get_span_context(self) -> trace.SpanContext:
        return self._context

    def set_attributes(self, attributes: Any) -> None:
        return None

    def set_attribute(self, key: str, value: Any) -> None:
        return None

    def add_event(self, *args: Any, **kwargs: Any) -> None:
        return None

    def update_name(self, name: str) -> None:
        return None

    def is_recording(self) -> bool:
        return True

    def set_status(self, *args: Any, **kwargs: Any) -> None:
        return None

    def record_exception(self, *args: Any, **kwargs: Any) -> None:
        return None


class FreeTracer(trace.Tracer):
    """Hands out :class:`FreeSpan` (not a no-op tracer: the instrumentation traces with it)."""

    span = FreeSpan()

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self.span

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


class FreeProvider(trace.TracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return FreeTracer()


async def run(rounds: int, messages: int, collect: bool = True) -> dict[str, dict[str, float]]:
    from prometheus_client import CollectorRegistry

    time_the_sdk()
    on, off = Telemetry(), Telemetry(sampled=False)
    ours = build_cases(on.options())
    reference = sdk_cases(on.provider, off.provider)
    free = FreeProvider()
    ours_free = build_cases({"tracer_provider": free, "registry": CollectorRegistry()})
    reference_free = sdk_cases(free, free)
    cases = {f"{op}/on": ours[op] for op in OPS}
    cases.update({f"{op}/sdk": reference[f"sdk/{op}"] for op in OPS})
    cases.update({f"{op}/on free": ours_free[op] for op in OPS})
    cases.update({f"{op}/sdk free": reference_free[f"sdk/{op}"] for op in OPS})
    for loop in cases.values():  # warm-up
        await loop(1000)
    totals: dict[str, list[float]] = {name: [] for name in cases}
    inside: dict[str, list[float]] = {name: [] for name in cases}
    order = list(cases.items())
    shuffle = random.Random(SEED).shuffle
    for _ in range(rounds):
        shuffle(order)  # a new order each round: drift within a round favours no case
        for name, loop in order:
            _inside[0] = 0.0
            if not collect:
                gc.collect()
                gc.disable()
            t0 = time.perf_counter()
            await loop(messages)
            gc.enable()
            totals[name].append((time.perf_counter() - t0) / messages * 1e6)
            inside[name].append(_inside[0] / messages * 1e6)
    paired = {  # each operation's ratio within each round, then the median
        op: statistics.median(
            a / b for a, b in zip(totals[f"{op}/on"], totals[f"{op}/sdk"], strict=True)
        )
        for op in OPS
    }
    return {
        name: {
            "paired": paired.get(name.split("/")[0], 0.0) if name.endswith("/on") else 0.0,
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
    parser.add_argument("--output", type=Path, help="also write the figures there (JSON)")
    args = parser.parse_args(argv)
    date = datetime.now(UTC).isoformat(timespec="seconds")
    us = asyncio.run(run(args.rounds, args.messages, collect=not args.no_gc))
    if args.output is not None:
        args.output.write_text(
            json.dumps(
                {
                    "date": date,
                    "rounds": args.rounds,
                    "messages": args.messages,
                    "collect": not args.no_gc,
                    "us_per_message": us,
                },
                indent=2,
            )
            + "\n"
        )
    print(f"{'µs per message':<16}{'total':>9}{'in SDK':>9}{'outside':>9}")
    for name, row in us.items():
        print(f"{name:<16}{row['total']:>9.2f}{row['inside']:>9.2f}{row['outside']:>9.2f}")
    for op in OPS:
        a, b = us[f"{op}/on"], us[f"{op}/sdk"]
        total, sdk = a["paired"], a["inside"] / b["inside"]
        glue = us[f"{op}/on free"]["total"] - us[f"{op}/sdk free"]["total"]
        print(f"{op}: total {total:.2f}x; in the SDK {sdk:.2f}x;", end="")
        print(f" outside +{a['outside'] - b['outside']:.2f} µs;", end="")
        print(f" glue on free spans +{glue:.2f} µs, so {(b['total'] + glue) / b['total']:.2f}x")


if __name__ == "__main__":
    main()
