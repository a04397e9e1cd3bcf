"""Hot-path benchmark: per-message cost of every bus pattern, side by side in one run.

Measures, interleaved round by round so that machine noise hits every case alike:

- the floor: a direct ``await handler(msg)``;
- reference points: blinker and pyee delivering the same message to the same (sync) handler;
- the SDK's own floor for the span model: one span, and the producer + handler span pair of
  a send, made with the 'on' mode's provider and no bus code at all;
- publish (1 and 10 subscribers), send, query (default timeout armed) and dispatch in four
  modes: ``off`` (``instrument=False``); ``on``, the built-in telemetry with an
  OpenTelemetry SDK provider + batch span processor, every message sampled, Prometheus into
  a private registry, the flow recorder; ``unsampled``, the same with the ``ALWAYS_OFF``
  sampler; ``no_sdk``, the built-in telemetry with no tracer provider configured (metrics
  and flow only: what ``get_commbus()`` costs out of the box).

Handlers never suspend, so the figures are the bus's own overhead.

Prints µs/message (median over rounds), the ratio to the floor and to blinker, the number of
spans the batch processor dropped, and writes everything to ``benchmarks/results/hotpath.json``.

Run: ``.venv/bin/python benchmarks/bench_hotpath.py [--rounds 7] [--messages 20000]``.
``--modes off`` measures only the telemetry-off column (plus the references), in about a
tenth of the time: the quick before/after check of a core change. Results of a partial run
are printed, not written, unless ``--output`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "hotpath.json"

#: The issue's targets in µs (telemetry off, telemetry on); None = report only.
TARGETS: dict[str, tuple[float | None, float | None]] = {
    "publish_1": (1.5, 25.0),
    "publish_10": (5.0, None),
    "send": (1.5, 25.0),
    "query": (2.0, 25.0),
    "dispatch": (5.0, 30.0),
}


def machine() -> str:
    """The machine a run is made on, for its results."""
    return f"{platform.machine()} {platform.processor() or ''}".strip()


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages now, for a run's results ("n/a" where unknown)."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


class Ev:
    category = "event"


class Cmd:
    category = "command"


class Ask:
    category = "query"


Loop = Callable[[int], Awaitable[None]]


class Telemetry:
    """The built-in telemetry wired to a private registry and an SDK provider that exports
    into a counter (so the benchmark measures our cost, not an exporter's)."""

    def __init__(self, sampled: bool = True) -> None:
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
        from prometheus_client import CollectorRegistry

        outer = self
        self.exported = 0
        self.ended = 0

        class CountingExporter(SpanExporter):
            def export(self, spans: Sequence[Any]) -> SpanExportResult:
                outer.exported += len(spans)
                return SpanExportResult.SUCCESS

        class EndCounter(SpanProcessor):
            def on_end(self, span: Any) -> None:
                outer.ended += 1

        self.provider = TracerProvider(sampler=ALWAYS_ON if sampled else ALWAYS_OFF)
        # Sized for bursts of a busy bus: see README "Sizing the batch span processor".
        self.provider.add_span_processor(
            BatchSpanProcessor(CountingExporter(), max_queue_size=65536, max_export_batch_size=2048)
        )
        self.provider.add_span_processor(EndCounter())
        self.registry = CollectorRegistry()

    def options(self) -> dict[str, Any]:
        return {"tracer_provider": self.provider, "registry": self.registry}

    def dropped(self) -> int:
        self.provider.force_flush()
        return self.ended - self.exported


class _Setup:
    """The buses, coordinator and messages the cases run, built with ``opts``."""

    def __init__(self, opts: dict[str, Any], package: str) -> None:
        ipc = importlib.import_module(f"{package}.ipc")
        types = importlib.import_module(f"{package}.types")
        null = importlib.import_module(f"{package}.logging").NullLogger
        self.bus1 = ipc.InMemoryCommBus(logger=null(), **opts)
        self.bus10 = ipc.InMemoryCommBus(logger=null(), **opts)

        async def handler(msg: Any) -> int:
            return 1

        self.envelope = types.Envelope(
            request_context=types.RequestContext(request_id="r", capability="c")
        )

        async def dispatch_handler(env: Any) -> Any:
            return env

        self.bus1.subscribe("Ev", handler)
        self.bus1.register_handler("Cmd", handler)
        self.bus1.register_handler("Ask", handler)
        for _ in range(10):
            self.bus10.subscribe("Ev", handler)
        self.coordinator = ipc.CommBusCoordinator(null(), self.bus1, **opts)
        self.coordinator.register_service(
            types.ServiceDescriptor(name="svc", service_type="worker")
        )
        self.coordinator.register_handler("svc", dispatch_handler)
        self.target = types.DispatchTarget(service_name="svc", method="run")


def one_message_ops(
    opts: dict[str, Any], package: str = "jeeves_control_tower"
) -> dict[str, tuple[Callable[[Any], Awaitable[Any]], Any]]:
    """send, query and dispatch of one message each, on the same buses, handlers and messages
    as :func:`build_cases`, as ``(call, argument)``: ``await call(argument)`` runs one, for a
    reference that runs the bus's operation inside code of its own. The dispatch is a
    wrapper (one coroutine more) that clears the envelope's history after each message, as
    the dispatch loop does."""
    setup = _Setup(opts, package)
    dispatch_once, target = setup.coordinator.dispatch, setup.target

    async def dispatch(envelope: Any) -> Any:
        result = await dispatch_once(target, envelope)
        envelope.processing_history.clear()
        return result

    return {
        "send": (setup.bus1.send, Cmd()),
        "query": (setup.bus1.query, Ask()),
        "dispatch": (dispatch, setup.envelope),
    }


def build_cases(opts: dict[str, Any], package: str = "jeeves_control_tower") -> dict[str, Loop]:
    """publish_1, publish_10, send, query and dispatch with ``opts``, on the package
    imported as ``package`` (``bench_core_ab`` loads a second tree under another name)."""
    setup = _Setup(opts, package)
    bus1, bus10, coordinator = setup.bus1, setup.bus10, setup.coordinator
    target, envelope = setup.target, setup.envelope
    ev, cmd, ask = Ev(), Cmd(), Ask()

    async def publish_1(n: int) -> None:
        for _ in range(n):
            await bus1.publish(ev)

    async def publish_10(n: int) -> None:
        for _ in range(n):
            await bus10.publish(ev)

    async def send(n: int) -> None:
        for _ in range(n):
            await bus1.send(cmd)

    async def query(n: int) -> None:
        for _ in range(n):
            await bus1.query(ask)

    async def dispatch(n: int) -> None:
        history = envelope.processing_history
        for _ in range(n):
            await coordinator.dispatch(target, envelope)
            history.clear()

    return {
        "publish_1": publish_1,
        "publish_10": publish_10,
        "send": send,
        "query": query,
        "dispatch": dispatch,
    }


def reference_cases() -> dict[str, Loop]:
    import blinker
    from pyee import EventEmitter

    msg = Ev()

    async def handler(m: Any) -> int:
        return 1

    def sync_handler(sender: Any, **kw: Any) -> int:
        return 1

    signal = blinker.Signal()
    signal.connect(sync_handler)
    emitter = EventEmitter()
    emitter.on("ev", lambda m: 1)

    async def floor(n: int) -> None:
        for _ in range(n):
            await handler(msg)

    async def blinker_send(n: int) -> None:
        send = signal.send
        for _ in range(n):
            send(msg)

    async def pyee_emit(n: int) -> None:
        emit = emitter.emit
        for _ in range(n):
            emit("ev", msg)

    return {"floor": floor, "blinker": blinker_send, "pyee": pyee_emit}


def send_span_attributes() -> tuple[dict[str, Any], dict[str, Any]]:
    """The attributes the tracing middleware gives a send of ``Cmd`` to ``bench.handler``:
    its producer span's and its handler's span's (without the message id)."""
    producer = {
        "messaging.system": "jeeves.commbus",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "Cmd",
    }
    consumer = {
        **producer,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "code.function.name": "bench.handler",
    }
    return producer, consumer


def span_floor_cases(provider: Any) -> dict[str, Loop]:
    """What the span model of issue 3 costs in the SDK alone, with none of our code: the
    producer span of a send plus its handler's child span, each with the attributes the
    tracing middleware gives it, made current and ended, on ``provider`` (the 'on' mode's).
    ``sdk_1span`` is the producer span only."""
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    tracer = provider.get_tracer("bench_hotpath.floor")
    producer, consumer = send_span_attributes()
    start, current = tracer.start_span, trace.set_span_in_context
    attach, detach = otel_context.attach, otel_context.detach
    producer_kind, consumer_kind = trace.SpanKind.PRODUCER, trace.SpanKind.CONSUMER

    async def one(n: int) -> None:
        for i in range(n):
            span = start("send Cmd", None, producer_kind, producer)
            span.set_attribute("messaging.message.id", str(i))
            token = attach(current(span))
            detach(token)
            span.end()

    async def two(n: int) -> None:
        for i in range(n):
            span = start("send Cmd", None, producer_kind, producer)
            span.set_attribute("messaging.message.id", str(i))
            parent = current(span)
            token = attach(parent)
            child = start("process Cmd", parent, consumer_kind, consumer)
            child_token = attach(current(child))
            detach(child_token)
            child.end()
            detach(token)
            span.end()

    return {"sdk_1span": one, "sdk_2spans": two}


async def measure_rounds(
    cases: dict[str, Loop], rounds: int, messages: int, seed: int | None = None
) -> dict[str, list[float]]:
    """µs per message of each case in each round, after a warm-up of every case. Each round
    runs every case once: in the given order, or with ``seed`` in an order drawn anew each
    round (so the machine's drift within a round favours no case)."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for loop in cases.values():  # warm-up
        await loop(max(messages // 10, 1000))
    order = list(cases.items())
    shuffle = random.Random(seed).shuffle if seed is not None else None
    for _ in range(rounds):
        if shuffle is not None:
            shuffle(order)
        for name, loop in order:
            t0 = time.perf_counter()
            await loop(messages)
            samples[name].append((time.perf_counter() - t0) / messages * 1e6)
    return samples


async def measure(cases: dict[str, Loop], rounds: int, messages: int) -> dict[str, float]:
    """The median over ``rounds`` of each case's µs per message (see :func:`measure_rounds`)."""
    samples = await measure_rounds(cases, rounds, messages)
    return {name: statistics.median(xs) for name, xs in samples.items()}


MODES = ("off", "on", "unsampled", "no_sdk")


async def run(rounds: int, messages: int, only: Sequence[str] = MODES) -> dict[str, Any]:
    """Measure the modes in ``only`` (all by default), interleaved in one run."""
    cases: dict[str, Loop] = dict(reference_cases())
    modes: dict[str, dict[str, Any]] = {"off": {"instrument": False}}
    telemetry: Telemetry | None = None
    if set(only) - {"off"}:
        from prometheus_client import CollectorRegistry

        telemetry = Telemetry()
        modes["on"] = telemetry.options()
        modes["unsampled"] = Telemetry(sampled=False).options()
        modes["no_sdk"] = {"registry": CollectorRegistry()}
        cases.update(span_floor_cases(telemetry.provider))
    for mode, opts in modes.items():
        if mode in only:
            cases.update({f"{k}/{mode}": v for k, v in build_cases(opts).items()})
    medians = await measure(cases, rounds, messages)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "python": platform.python_version(),
        "rounds": rounds,
        "messages_per_round": messages,
        "modes": list(only),
        "us_per_message": medians,
        "spans_dropped": telemetry.dropped() if telemetry is not None else 0,
        "spans_ended": telemetry.ended if telemetry is not None else 0,
    }


def report(result: dict[str, Any]) -> str:
    us = result["us_per_message"]
    modes = result.get("modes", MODES)
    floor, blink = us["floor"], us["blinker"]
    head = f"{'case':<12}" + "".join(f"{m + ' µs':>14}" for m in modes)
    lines = [head + f"{'off/floor':>11}{'off/blinker':>13}{'target off':>12}{'target on':>11}"]
    for name, (t_off, t_on) in TARGETS.items():
        off, on = us[f"{name}/off"], us.get(f"{name}/on")
        cells = "".join(f"{us[f'{name}/{m}']:>14.2f}" for m in modes)
        lines.append(
            f"{name:<12}{cells}{off / floor:>11.1f}{off / blink:>13.2f}"
            f"{_target(off, t_off):>12}{_target(on, t_on) if on is not None else '-':>11}"
        )
    lines.append(
        f"references: floor (await handler) {floor:.3f} µs, blinker {blink:.2f} µs,"
        f" pyee {us['pyee']:.2f} µs"
    )
    if "sdk_2spans" not in us:
        return "\n".join(lines)
    two = us["sdk_2spans"]
    lines.append(
        f"the SDK alone (same provider, no bus): 1 span {us['sdk_1span']:.2f} µs, the two spans"
        f" of a send {two:.2f} µs; 'on' send = {us['send/on'] / two:.2f}x those two spans"
    )
    lines.append(
        f"spans ('on' mode): {result['spans_ended']} ended, {result['spans_dropped']} dropped"
        " by the batch processor"
    )
    return "\n".join(lines)


def _target(value: float, target: float | None) -> str:
    if target is None:
        return "report"
    return f"{'ok' if value <= target else 'MISS'} ≤{target:g}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        default=list(MODES),
        help="telemetry modes to measure ('off' alone: the quick core check)",
    )
    args = parser.parse_args(argv)
    only = tuple(m for m in MODES if m in args.modes)
    if "off" not in only:
        parser.error("--modes must include 'off' (the reference column)")
    result = asyncio.run(run(args.rounds, args.messages, only))
    print(report(result))
    output = args.output if args.output is not None else (RESULTS if only == MODES else None)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {output}")


if __name__ == "__main__":
    main()
