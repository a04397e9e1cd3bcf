"""What the built-in telemetry adds to a message, against what its parts cost, in one run.

Every ratio of issue 15 item 6, measured side by side (interleaved round by round, so machine
noise hits every case alike) in one process:

- ``metrics``: added cost of metrics + flow with tracing off (``tracing=False``) over
  ``instrument=False``, per publish / send / query / dispatch, against one prometheus_client
  ``Histogram.observe`` + one ``Counter.inc`` on bound children (the package's buckets)
  measured in the same run (target ≤ 1, dispatch ≤ 2). ``no_sdk`` is the same with the
  tracing middleware present but no SDK configured (what ``get_commbus()`` costs out of the
  box), reported against the same reference.
- ``on`` (every span sampled, metrics + flow too): an instrumented send / query / dispatch
  against the SDK's own two spans of that operation (producer + process, with the same
  names, kinds and attributes, made current, ended, around the same handler) on the same
  provider and no bus code (target ≤ 1.15).
- ``bare`` (reported, no target): the same SDK spans around the *uninstrumented* bus
  operation and nothing else. ``bare / sdk spans`` is how much of the ``on`` line's
  allowance the bus's own work takes inside the spans (the reference leaves it out), and
  ``on / bare`` what the metrics, flow and span glue add above that. An instrumented
  operation does all the uninstrumented one does, so it can cost less than ``bare`` only by
  merging pieces of that work with its own (the written-out sketch of
  ``bench_written_out.py`` stays above it); medians of a few runs move by ±0.05 here.
- ``unsampled`` (``ALWAYS_OFF``): added cost over metrics-only (``metrics``, as the issue
  states it) against one SDK ``start_as_current_span`` under the same sampler (target ≤ 1.2).
- ``instrument=False`` against the direct ``await handler(msg)`` floor, for the record (the
  core's own benchmark, ``bench_hotpath.py --modes off``, tracks it).

Each round runs every case once, back to back, in an order shuffled anew each round (a fixed
seed); each ratio is taken within each round and the report gives the median over the rounds
and its quartiles. Many short rounds (the default, 21 of 4,000 messages) let a machine whose
speed drifts (a shared one) move both sides of a ratio alike.

Run: ``.venv/bin/python benchmarks/bench_telemetry_cost.py [--rounds 21] [--messages 4000]``;
writes ``benchmarks/results/telemetry_cost.json`` unless ``--output`` says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_hotpath import (
    Loop,
    Telemetry,
    build_cases,
    loadavg,
    machine,
    measure_rounds,
    one_message_ops,
    reference_cases,
)

RESULTS = Path(__file__).parent / "results" / "telemetry_cost.json"
OPS = ("publish_1", "send", "query", "dispatch")
#: (ratio, target) of each line of the report.
TARGET_METRICS, TARGET_DISPATCH, TARGET_ON, TARGET_UNSAMPLED = 1.0, 2.0, 1.15, 1.2
#: The shuffle of each round's case order (fixed: runs are comparable).
SEED = 15


def prometheus_reference() -> dict[str, Loop]:
    """One ``Histogram.observe`` + one ``Counter.inc`` on bound children."""
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from jeeves_control_tower.observability.metrics import LATENCY_BUCKETS

    registry = CollectorRegistry()
    histogram = Histogram(
        "d_seconds", "d", ["pattern", "message_type"], registry=registry, buckets=LATENCY_BUCKETS
    )
    counter = Counter("c", "c", ["pattern", "message_type", "outcome"], registry=registry)
    observe = histogram.labels("send", "Cmd").observe
    inc = counter.labels("send", "Cmd", "ok").inc

    async def prom(n: int) -> None:
        for _ in range(n):
            observe(0.000004)
            inc()

    return {"prom_observe_inc": prom}


def sdk_cases(
    provider: Any,
    off_provider: Any,
    ops: dict[str, tuple[Callable[[Any], Awaitable[Any]], Any]] | None = None,
) -> dict[str, Loop]:
    """The SDK's own spans of each operation on ``provider`` (no bus code): the producer span
    made current and the process span inside it, with the attributes the instrumentation
    gives them, and the handler awaited inside (what spans written by hand around the same
    handler cost: the bus cases run it too); and one ``start_as_current_span`` under
    ``off_provider`` (ALWAYS_OFF).

    With ``ops`` (:func:`bench_hotpath.one_message_ops` of ``instrument=False``), also
    ``bare/{op}``: the same spans around the uninstrumented operation in place of the bare
    handler (the same call, to another function), and nothing else: what the bus's own work
    costs inside those spans, before any metrics, flow or glue."""
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    tracer = provider.get_tracer("bench.sdk")
    off_tracer = off_provider.get_tracer("bench.sdk.off")
    start, current = tracer.start_span, trace.set_span_in_context
    attach, detach = otel_context.attach, otel_context.detach
    producer_kind, consumer_kind = trace.SpanKind.PRODUCER, trace.SpanKind.CONSUMER

    def attrs(op: str, destination: str, **extra: Any) -> dict[str, Any]:
        return {
            "messaging.system": "jeeves.commbus",
            "messaging.operation.type": "send",
            "messaging.operation.name": op,
            "messaging.destination.name": destination,
            **extra,
        }

    def process(base: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            **base,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            **extra,
        }

    def two_spans(
        name: str,
        op: str,
        destination: str,
        dispatch: bool,
        inner: tuple[Callable[[Any], Awaitable[Any]], Any] | None = None,
    ) -> Loop:
        svc = {"jeeves.dispatch.service": destination, "jeeves.dispatch.method": "run"}
        producer = attrs(op, destination, **(svc | {"jeeves.dispatch.priority": 1}))
        if not dispatch:
            producer = attrs(op, destination)
        consumer = (
            process(attrs(op, destination), **svc)
            if dispatch
            else process(producer, **{"code.function.name": "bench.handler"})
        )

        async def handler(message: Any) -> Any:  # the bus cases' handlers
            return 1 if not dispatch else message

        # what runs inside the spans: the handler, or the uninstrumented operation
        run, arg = (handler, producer) if inner is None else inner

        # Names made once, as spans written by hand would have them (the bus caches its own).
        producer_name, consumer_name = f"{name} {destination}", f"process {destination}"

        async def loop(n: int) -> None:
            for i in range(n):
                span = start(producer_name, None, producer_kind, producer)
                if not dispatch:
                    span.set_attribute("messaging.message.id", str(i))
                parent = current(span)
                token = attach(parent)
                child_attrs = dict(consumer)
                if dispatch:
                    child_attrs["jeeves.dispatch.attempt"] = 1
                else:
                    child_attrs["messaging.message.id"] = str(i)
                child = start(consumer_name, parent, consumer_kind, child_attrs)
                child_token = attach(current(child))
                await run(arg)
                detach(child_token)
                child.end()
                detach(token)
                if dispatch:
                    span.set_attribute("jeeves.dispatch.attempts", 1)
                    span.set_attribute("jeeves.dispatch.outcome", "ok")
                span.end()

        return loop

    off_attrs = attrs("send", "Cmd")

    async def off_span(n: int) -> None:
        start_current = off_tracer.start_as_current_span
        for _ in range(n):
            with start_current("send Cmd", None, producer_kind, off_attrs):
                pass

    cases = {
        "sdk/send": two_spans("send", "send", "Cmd", False),
        "sdk/query": two_spans("query", "query", "Ask", False),
        "sdk/dispatch": two_spans("dispatch", "dispatch", "svc", True),
        "sdk/off_start_as_current_span": off_span,
    }
    if ops is not None:
        cases["bare/send"] = two_spans("send", "send", "Cmd", False, ops["send"])
        cases["bare/query"] = two_spans("query", "query", "Ask", False, ops["query"])
        cases["bare/dispatch"] = two_spans("dispatch", "dispatch", "svc", True, ops["dispatch"])
    return cases


def _bus_cases(modes: dict[str, dict[str, Any]]) -> dict[str, Loop]:
    cases: dict[str, Loop] = {}
    for mode, opts in modes.items():
        built = build_cases(opts)
        cases.update({f"{op}/{mode}": built[op] for op in OPS})
    return cases


async def run(rounds: int, messages: int) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    on, unsampled = Telemetry(), Telemetry(sampled=False)
    modes: dict[str, dict[str, Any]] = {
        "off": {"instrument": False},
        "metrics": {"registry": CollectorRegistry(), "tracing": False},
        "no_sdk": {"registry": CollectorRegistry()},
        "unsampled": unsampled.options(),
        "on": on.options(),
    }
    cases: dict[str, Loop] = {"floor": reference_cases()["floor"]}
    cases.update(prometheus_reference())
    ops = one_message_ops({"instrument": False})
    cases.update(sdk_cases(on.provider, unsampled.provider, ops))
    cases.update(_bus_cases(modes))
    date, load = datetime.now(UTC).isoformat(timespec="seconds"), loadavg()
    samples = await measure_rounds(cases, rounds, messages, seed=SEED)
    medians = {name: statistics.median(xs) for name, xs in samples.items()}
    return {
        "date": date,
        "loadavg_before": load,
        "machine": machine(),
        "python": platform.python_version(),
        "rounds": rounds,
        "messages_per_round": messages,
        "us_per_message": medians,
        "ratios": paired_ratios(samples),
        "spans_dropped": on.dropped(),
    }


def paired_ratios(samples: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """Every target ratio computed within each round (from its cases' runs in that round,
    in the round's shuffled order), then the median over the rounds, with the quartiles of
    the rounds' values (inclusive: within the values measured) and the values themselves
    in round order: a round the machine slowed down moves its ratios less than the cases'
    medians taken apart would."""
    rounds = len(next(iter(samples.values())))
    each = [ratios({name: xs[i] for name, xs in samples.items()}) for i in range(rounds)]
    out: dict[str, dict[str, Any]] = {}
    for line, first in each[0].items():
        values = [r[line]["value"] for r in each]
        out[line] = {
            "value": statistics.median(values),
            "target": first["target"],
            "quartiles": (
                statistics.quantiles(values, n=4, method="inclusive") if rounds > 1 else values * 3
            ),
            "per_round": values,
        }
    return out


def ratios(us: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Every target ratio: ``{line: {"value": r, "target": t}}``."""
    prom = us["prom_observe_inc"]
    off_span = us["sdk/off_start_as_current_span"]
    out: dict[str, dict[str, Any]] = {}
    for op in OPS:
        limit = TARGET_DISPATCH if op == "dispatch" else TARGET_METRICS
        for mode in ("metrics", "no_sdk"):
            added = us[f"{op}/{mode}"] - us[f"{op}/off"]
            out[f"{op}: {mode} added / prom observe+inc"] = {"value": added / prom, "target": limit}
        if op != "publish_1":
            out[f"{op}: on / sdk spans"] = {
                "value": us[f"{op}/on"] / us[f"sdk/{op}"],
                "target": TARGET_ON,
            }
            if f"bare/{op}" in us:  # the bus's own share of the allowance, and ours above it
                out[f"{op}: bare (uninstrumented inside the spans) / sdk spans"] = {
                    "value": us[f"bare/{op}"] / us[f"sdk/{op}"],
                    "target": None,
                }
                out[f"{op}: on / bare"] = {
                    "value": us[f"{op}/on"] / us[f"bare/{op}"],
                    "target": None,
                }
        added = us[f"{op}/unsampled"] - us[f"{op}/metrics"]
        out[f"{op}: unsampled added over metrics / sdk start_as_current_span"] = {
            "value": added / off_span,
            "target": TARGET_UNSAMPLED,
        }
    return out


def _limit(target: float | None) -> str:
    return "" if target is None else f" ≤{target:g}"


def report(result: dict[str, Any]) -> str:
    us = result["us_per_message"]
    modes = ("off", "metrics", "no_sdk", "unsampled", "on")
    lines = [f"run {result['date']}, load average before {result['loadavg_before']}"]
    lines.append(f"{'case':<12}" + "".join(f"{m + ' µs':>14}" for m in modes))
    for op in OPS:
        lines.append(f"{op:<12}" + "".join(f"{us[f'{op}/{m}']:>14.2f}" for m in modes))
    lines.append(
        f"references: floor {us['floor']:.3f} µs; prometheus observe+inc"
        f" {us['prom_observe_inc']:.2f} µs; SDK spans send {us['sdk/send']:.2f}, query"
        f" {us['sdk/query']:.2f}, dispatch {us['sdk/dispatch']:.2f} µs; ALWAYS_OFF"
        f" start_as_current_span {us['sdk/off_start_as_current_span']:.2f} µs"
    )
    lines.append(f"  {'ratio (median of the rounds; quartiles)':<66}")
    for line, r in result["ratios"].items():
        ok = "report" if r["target"] is None else "ok" if r["value"] <= r["target"] else "MISS"
        q1, _, q3 = r["quartiles"]
        lines.append(
            f"  {line:<66}{r['value']:>7.2f}  {ok}{_limit(r['target'])}  ({q1:.2f} to {q3:.2f})"
        )
    lines.append(f"spans dropped by the batch processor ('on'): {result['spans_dropped']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--messages", type=int, default=4_000)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.rounds, args.messages))
    result["loadavg_after"] = loadavg()
    print(report(result))
    print(f"load average after {result['loadavg_after']}")
    if str(args.output) != "-":
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
