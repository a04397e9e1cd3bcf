"""What a traced send written out in one frame could cost: a sketch of the instrumented send
against the "every span sampled" reference, in one run.

``bench_telemetry_cost.py`` shows the SDK's own two spans around the uninstrumented send
(``bare``) and how far the instrumented send is above that. This asks what is left once the
bus's chain and hooks are gone. ``sketch`` does, for one send, every piece of work the
instrumentation must do, in one loop body:

- the producer span, from a cached name and attributes, with a generated message id set on
  it, made current;
- the handler's span, started in a copied context and made current there, and the handler
  driven in that context;
- the spans ended and the trace id read;
- the message told to the real metrics + flow probe of a bus (``BusProbe.message``, with
  the in-flight count taken first).

It is not the library's code and handles no error, so it is what a written-out traced path
could at best reach.

It measures a handler that never suspends (the sketch drives it one step), as the other
benchmarks do.

Cases, interleaved round by round in a shuffled order (``bench_hotpath.measure_rounds``):
``sdk`` (the reference), ``bare`` (those spans around the uninstrumented send), ``on`` (the
instrumented send), ``sketch``. Each ratio is taken within each round; the median and
quartiles are printed and written to ``benchmarks/results/written_out.json`` unless
``--output`` says otherwise (``-``: not written). Diagnostic only. Run:
``PYTHONPATH=$PWD/src:$PWD .venv/bin/python benchmarks/bench_written_out.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import platform
import statistics
import sys
import time
from contextvars import copy_context
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_hotpath import (
    Cmd,
    Loop,
    Telemetry,
    build_cases,
    loadavg,
    machine,
    measure_rounds,
    one_message_ops,
    send_span_attributes,
)
from bench_telemetry_cost import SEED, sdk_cases
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.logging import NullLogger

RESULTS = Path(__file__).parent / "results" / "written_out.json"


def sketch_case(provider: Any) -> Loop:
    """The written-out send on ``provider`` (see the module docstring)."""
    metrics_bus = InMemoryCommBus(logger=NullLogger(), registry=CollectorRegistry(), tracing=False)
    probe = metrics_bus.message_probe
    inflight = probe.inflight

    async def handler(message: Any) -> int:  # the bus cases' handler
        return 1

    handlers = {"Cmd": handler}
    tracer = provider.get_tracer("bench.sketch")
    start, current = tracer.start_span, trace.set_span_in_context
    attach, detach = otel_context.attach, otel_context.detach
    producer_kind, consumer_kind = trace.SpanKind.PRODUCER, trace.SpanKind.CONSUMER
    producer, consumer = send_span_attributes()
    producers = {("send", "Cmd"): ("send Cmd", producer)}
    consumers = {("send", "Cmd"): ("process Cmd", consumer)}
    ids, head = itertools.count(), "0123456789ab_"
    names = ("bench.handler",)
    message = Cmd()
    clock = time.perf_counter

    def handler_span(parent: Any, message_id: str) -> Any:
        name, base = consumers["send", "Cmd"]
        attributes = dict(base)
        attributes["messaging.message.id"] = message_id
        span = start(name, parent, consumer_kind, attributes)
        attach(current(span))  # the handler's own copy of the context
        return span

    async def sketch(n: int) -> None:
        for _ in range(n):
            message_type = type(message).__name__
            inflight["send"] = inflight.get("send", 0) + 1
            started = clock()
            name, attributes = producers["send", message_type]
            span = start(name, None, producer_kind, attributes)
            message_id = head + str(next(ids))
            span.set_attribute("messaging.message.id", message_id)
            parent = current(span)
            token = attach(parent)
            fn = handlers[message_type]
            context = copy_context()
            child = context.run(handler_span, parent, message_id)
            coro = fn(message)
            try:  # noqa: SIM105 (the bus's own way: suppress() is a context manager)
                context.run(coro.send, None)
            except StopIteration:
                pass
            child.end()
            detach(token)
            trace_id = span.get_span_context().trace_id
            span.end()
            probe.message(
                "send", "local", "jeeves.commbus", message_type, started, "ok", names, None,
                trace_id, message,
            )  # fmt: skip

    return sketch


async def run(rounds: int, messages: int) -> dict[str, list[float]]:
    on, off = Telemetry(), Telemetry(sampled=False)
    reference = sdk_cases(on.provider, off.provider, one_message_ops({"instrument": False}))
    cases: dict[str, Loop] = {
        "sdk": reference["sdk/send"],
        "bare": reference["bare/send"],
        "on": build_cases(on.options())["send"],
        "sketch": sketch_case(on.provider),
    }
    samples = await measure_rounds(cases, rounds, messages, seed=SEED)
    if on.dropped():
        print(f"the batch processor dropped {on.dropped()} spans")
    return samples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the quartiles need two rounds)")
    date, load = datetime.now(UTC).isoformat(timespec="seconds"), loadavg()
    samples = asyncio.run(run(args.rounds, args.messages))
    medians = {name: statistics.median(xs) for name, xs in samples.items()}
    print(f"run {date}; µs per message: " + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()))
    ratios: dict[str, Any] = {}
    for name in ("bare", "on", "sketch"):
        per_round = [a / b for a, b in zip(samples[name], samples["sdk"], strict=True)]
        q1, median, q3 = statistics.quantiles(per_round, n=4, method="inclusive")
        ratios[f"{name} / sdk"] = {"value": median, "quartiles": [q1, median, q3]}
        print(f"send, {name} / sdk spans: {median:.2f} (quartiles {q1:.2f} to {q3:.2f})")
    if args.output != "-":
        result = {
            "date": date,
            "loadavg_before": load,
            "machine": machine(),
            "python": platform.python_version(),
            "rounds": args.rounds,
            "messages_per_round": args.messages,
            "us_per_message": medians,
            "ratios": ratios,
            "per_round_us": samples,
        }
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
