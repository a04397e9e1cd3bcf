"""Load benchmark: a mixed workload held for minutes through the instrumented bus, in memory
and over Redis and NATS; every message is accounted for.

For each target (``inmemory``, ``redis``, ``nats``) it builds the bus with the built-in
telemetry on, as an application would have it: an OpenTelemetry SDK ``TracerProvider`` with
a ``BatchSpanProcessor`` (every span sampled; the exporter drops spans and counts them), a
private Prometheus ``CollectorRegistry`` and a flow recorder. Over a broker there are two
buses in this process, each with its own transport, as two processes would have them: a
*producer* side and a *consumer* side that holds the subscribers, the handlers and the
services (dispatched to from the producer side through ``RemoteServices``).

``--producers`` tasks (16) then run for ``--duration`` seconds, each cycling through:

- **publish**: an event to ``--subscribers`` (3) subscribers;
- **send**: a durable command to its one handler;
- **query**: request/response (the result is checked);
- **dispatch**: ``CommBusCoordinator.dispatch`` to one of three services (``max_concurrent``
  64, 4 and 1) with the five priorities in turn (the envelope's output is checked).

Handlers suspend now and then (``asyncio.sleep(0)``, sometimes 0.5-1 ms). A producer keeps
at most ``--window`` (16) publish deliveries and sends not yet handled (over a broker they
return before delivery), so the load is steady instead of a growing backlog.

Reported per target: messages per second per pattern and in total (after the warm-up),
p50/p99/max latency per pattern (publish and send: from the call to the end of the handler,
per delivery; query and dispatch: the call), errors per pattern (exceptions, timeouts, wrong
results, terminated envelopes, and, after the producers stop and the consumers drain, lost
messages = sent but never handled, duplicates and out-of-order deliveries per producer),
``max_concurrent`` violations, resident memory (sampled every ``--sample-every`` s: after the
warm-up, at the end, growth), spans ended and dropped by the batch processor, the library's
own error logs and telemetry errors. Latencies are kept in fixed log-spaced histograms (2 %
wide buckets) so the benchmark itself does not grow in memory.

Exits with status 1 if any target had an error, a lost, duplicated or reordered message, a
``max_concurrent`` violation, a telemetry error or an error logged by the library.

Run: ``.venv/bin/python benchmarks/bench_load.py`` (about 7 minutes: 120 s per target), or
``--quick`` (10 s per target, results not written unless ``--output``), ``--targets redis``.
Needs Redis on 127.0.0.1:6379 and NATS with JetStream on 127.0.0.1:4222 (or JT_REDIS_URL /
JT_NATS_URL). Broker state lives under a prefix unique to the run and is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import math
import os
import platform
import resource
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from procstats import rss_mb  # benchmarks/procstats.py (run from this folder)
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.ipc.adapters import BrokerTransport, MessageRegistry, RemoteServices
from jeeves_control_tower.ipc.middlewares.dedupe import DedupeMiddleware
from jeeves_control_tower.observability import FlowRecorder
from jeeves_control_tower.types import (
    DispatchTarget,
    Envelope,
    RequestContext,
    SchedulingPriority,
    ServiceDescriptor,
)

RESULTS = Path(__file__).parent / "results" / "load.json"
REDIS_URL = os.environ.get("JT_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("JT_NATS_URL", "nats://127.0.0.1:4222")
TARGETS = ("inmemory", "redis", "nats")
PATTERNS = ("publish", "send", "query", "dispatch")
PRIORITIES = tuple(SchedulingPriority)
PAYLOAD = "x" * 64
QUERY_TIMEOUT = 10.0  # seconds; any timeout is an error (no faults are injected)
DISPATCH_TIMEOUT = 10.0
STALL_TIMEOUT = 30.0  # a producer whose window does not move for this long gives up
DRAIN_TIMEOUT = 30.0  # after the producers stop: time for the consumers to catch up

#: name, max_concurrent, suspends every n-th call (sleep(0)), sleeps 0.5 ms every m-th call
SERVICES = (
    ("svc_fast", 64, 16, 0),
    ("svc_bounded", 4, 1, 16),
    ("svc_single", 1, 4, 32),
)


# ---------------------------------------------------------------------- messages


@dataclass
class LoadEvent:
    producer: int
    seq: int
    ts: float  # time.perf_counter() at the call (producer and consumer share this process)
    body: str = PAYLOAD
    category: str = field(default="event", init=False)


@dataclass
class LoadCommand:
    producer: int
    seq: int
    ts: float
    body: str = PAYLOAD
    category: str = field(default="command", init=False)


@dataclass
class LoadQuery:
    producer: int
    seq: int
    ts: float
    body: str = PAYLOAD
    category: str = field(default="query", init=False)


MESSAGES = MessageRegistry()
for _cls in (LoadEvent, LoadCommand, LoadQuery):
    MESSAGES.register(_cls)


# ---------------------------------------------------------------------- measuring


class Histogram:
    """Latencies in log-spaced buckets 2 % wide from 1 µs up to about 6 minutes: constant
    memory however long the run; quantiles are the upper edge of their bucket."""

    RATIO = 1.02
    BUCKETS = 1000
    _LOG = math.log(RATIO)

    __slots__ = ("counts", "max", "n", "total")

    def __init__(self) -> None:
        self.counts = [0] * self.BUCKETS
        self.n = 0
        self.max = 0.0
        self.total = 0.0

    def add(self, seconds: float) -> None:
        us = seconds * 1e6
        i = 0 if us <= 1.0 else min(int(math.log(us) / self._LOG) + 1, self.BUCKETS - 1)
        self.counts[i] += 1
        self.n += 1
        self.total += us
        if us > self.max:
            self.max = us

    def quantile(self, q: float) -> float:
        """The ``q`` quantile in µs (0 when empty)."""
        if not self.n:
            return 0.0
        rank = max(1, math.ceil(q * self.n))
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                return min(self.RATIO**i, self.max)
        return self.max

    def summary(self) -> dict[str, Any]:
        return {
            "samples": self.n,
            "p50_us": _r(self.quantile(0.50)),
            "p99_us": _r(self.quantile(0.99)),
            "max_us": _r(self.max),
            "mean_us": _r(self.total / self.n) if self.n else 0.0,
        }


def _r(x: float) -> float:
    return round(x, 1) if x < 1000 else float(round(x))


@dataclass
class PatternStats:
    ops: int = 0  # completed calls while measuring (after the warm-up)
    ops_total: int = 0  # completed calls over the whole run
    errors: Counter[str] = field(default_factory=Counter)
    call: Histogram = field(default_factory=Histogram)  # the producer's await
    e2e: Histogram = field(default_factory=Histogram)  # call -> end of the handler


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CountingLogger:
    """A structlog-style logger for the library that keeps nothing but counts per level and
    event (and the first few error events in full)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.first_errors: list[dict[str, Any]] = []

    def _log(self, level: str, message: str, fields: dict[str, Any]) -> None:
        self.counts[f"{level}:{message}"] += 1
        if level == "error" and len(self.first_errors) < 10:
            self.first_errors.append({"event": message, **{k: str(v) for k, v in fields.items()}})

    def debug(self, message: str, /, **fields: Any) -> None:
        return None

    def info(self, message: str, /, **fields: Any) -> None:
        return None

    def warning(self, message: str, /, **fields: Any) -> None:
        self._log("warning", message, fields)

    def error(self, message: str, /, **fields: Any) -> None:
        self._log("error", message, fields)

    def exception(self, message: str, /, **fields: Any) -> None:
        self._log("error", message, fields)

    def bind(self, **fields: Any) -> CountingLogger:
        return self

    def of_level(self, level: str) -> dict[str, int]:
        prefix = f"{level}:"
        return {k[len(prefix) :]: v for k, v in self.counts.items() if k.startswith(prefix)}


class StdlibCounter(logging.Handler):
    """Counts WARNING and above from third-party loggers (the OTel SDK's "Queue is full",
    nats-py, redis-py) by logger name."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.levelname}:{record.name}"] += 1


# ---------------------------------------------------------------------- telemetry


class CountingExporter(SpanExporter):
    """Drops every span, counting them (runs in the batch processor's worker thread)."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


class EndCounter(SpanProcessor):
    """Counts the spans ended (every one is then offered to the batch processor)."""

    def __init__(self) -> None:
        self.ended = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1


@dataclass
class Telemetry:
    provider: TracerProvider
    ends: EndCounter
    exporter: CountingExporter
    registry: CollectorRegistry
    flow: FlowRecorder

    def options(self) -> dict[str, Any]:
        return {"tracer_provider": self.provider, "registry": self.registry, "flow": self.flow}


def make_telemetry() -> Telemetry:
    """The default instrumentation with an SDK: batch span processor sized as in
    docs/observability.md, a private registry, a flow recorder of its own."""
    ends, exporter = EndCounter(), CountingExporter()
    provider = TracerProvider()
    provider.add_span_processor(ends)
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_queue_size=65536, max_export_batch_size=2048)
    )
    return Telemetry(provider, ends, exporter, CollectorRegistry(), FlowRecorder())


def settle(tel: Telemetry) -> None:
    """Before reading RSS: export what the batch processor holds (its queue is up to
    65,536 spans; how full it happens to be would otherwise decide the figure) and collect
    garbage. Blocks the loop for a moment (before the measured window, after the drain)."""
    tel.provider.force_flush(10_000)
    gc.collect()


def metric_sums(registry: CollectorRegistry) -> dict[str, Any]:
    """What the library's own metrics say, summed over message types and services."""
    out: dict[str, Any] = {
        "messages_by_outcome": Counter(),
        "messages_not_ok": {},  # pattern:outcome:message_type -> count
        "wire_frames": {},  # direction:pattern -> count (when the adapters count them)
        "dispatch_by_outcome": Counter(),
        "handler_errors": 0.0,
        "timeouts": 0.0,
        "telemetry_errors": 0.0,
        "dispatch_retries": 0.0,
        "wire_rejected": 0.0,
        "transport_reconnects": 0.0,
        "transport_redeliveries": 0.0,
        "inflight_at_end": 0.0,
        "service_load_at_end": 0.0,
    }
    simple = {
        "commbus_handler_errors_total": "handler_errors",
        "commbus_timeouts_total": "timeouts",
        "commbus_telemetry_errors_total": "telemetry_errors",
        "commbus_dispatch_retries_total": "dispatch_retries",
        "commbus_wire_rejected_total": "wire_rejected",
        "commbus_transport_reconnects_total": "transport_reconnects",
        "commbus_transport_redeliveries_total": "transport_redeliveries",
        "commbus_inflight_messages": "inflight_at_end",
        "commbus_service_load": "service_load_at_end",
    }
    for family in registry.collect():
        for s in family.samples:
            if s.name == "commbus_messages_total":
                key = f"{s.labels['pattern']}:{s.labels['outcome']}"
                out["messages_by_outcome"][key] += int(s.value)
                if s.labels["outcome"] != "ok" and s.value:
                    detail = f"{key}:{s.labels['message_type']}"
                    out["messages_not_ok"][detail] = int(s.value)
            elif s.name == "commbus_wire_messages_total":  # frames that crossed the broker
                key = f"{s.labels.get('direction')}:{s.labels.get('pattern')}"
                out["wire_frames"][key] = out["wire_frames"].get(key, 0) + int(s.value)
            elif s.name == "commbus_dispatch_total":
                out["dispatch_by_outcome"][s.labels["outcome"]] += int(s.value)
            elif s.name in simple:
                out[simple[s.name]] += s.value
    out["messages_by_outcome"] = dict(sorted(out["messages_by_outcome"].items()))
    out["dispatch_by_outcome"] = dict(sorted(out["dispatch_by_outcome"].items()))
    return out


# ---------------------------------------------------------------------- the workload


class Load:
    """The state of one target's run: counters, handlers and the producers."""

    def __init__(self, producers: int, subscribers: int, window: int) -> None:
        self.producers = producers
        self.subscribers = subscribers
        self.window = window
        self.stats = {p: PatternStats() for p in PATTERNS}
        self.measuring = False
        self.stop = False
        self.seq = {p: [0] * producers for p in PATTERNS}
        # deliveries expected (publish: x subscribers) and seen, over the whole run
        self.expected = dict.fromkeys(PATTERNS, 0)
        self.handled = dict.fromkeys(PATTERNS, 0)
        self.next_seq: dict[tuple[str, int, int], int] = {}
        self.gaps = dict.fromkeys(PATTERNS, 0)
        self.out_of_order = dict.fromkeys(PATTERNS, 0)
        self.outstanding = [0] * producers
        self.wake = [asyncio.Event() for _ in range(producers)]
        self.all_drained = asyncio.Event()
        self.active = {name: 0 for name, *_ in SERVICES}
        self.peak = {name: 0 for name, *_ in SERVICES}
        self.by_priority = {p.value: Histogram() for p in PRIORITIES}
        self.hung = 0  # producers still inside a call long after the stop

    # ---- consumer side

    def arrived(self, pattern: str, producer: int, sub: int, seq: int) -> None:
        """A handler started on message ``seq`` of ``producer``: check the per-producer
        order (publish: per subscriber) and count it."""
        key = (pattern, producer, sub)
        want = self.next_seq.get(key, 0)
        if seq == want:
            self.next_seq[key] = seq + 1
        elif seq > want:
            self.gaps[pattern] += seq - want
            self.next_seq[key] = seq + 1
        else:
            self.out_of_order[pattern] += 1
        self.handled[pattern] += 1

    def finished(self, pattern: str, producer: int, ts: float) -> None:
        if self.measuring:
            self.stats[pattern].e2e.add(time.perf_counter() - ts)
        self.outstanding[producer] -= 1
        if self.outstanding[producer] < self.window:
            self.wake[producer].set()
        if self.stop and self.drained():
            self.all_drained.set()

    def subscriber(self, sub: int) -> Callable[[LoadEvent], Awaitable[None]]:
        async def on_event(event: LoadEvent) -> None:
            self.arrived("publish", event.producer, sub, event.seq)
            if event.seq % 8 == sub:
                await asyncio.sleep(0)
            if event.seq % 256 == 0:
                await asyncio.sleep(0.0005)
            self.finished("publish", event.producer, event.ts)

        return on_event

    async def on_command(self, command: LoadCommand) -> None:
        self.arrived("send", command.producer, 0, command.seq)
        if command.seq % 4 == 0:
            await asyncio.sleep(0)
        if command.seq % 128 == 0:
            await asyncio.sleep(0.001)
        self.finished("send", command.producer, command.ts)

    async def on_query(self, query: LoadQuery) -> int:
        self.handled["query"] += 1
        if query.seq % 4 == 1:
            await asyncio.sleep(0)
        if query.seq % 128 == 1:
            await asyncio.sleep(0.0005)
        return query.seq * 2 + 1

    def service_handler(
        self, name: str, capacity: int, suspend_every: int, sleep_every: int
    ) -> Callable[[Envelope], Awaitable[Envelope]]:
        async def handle(envelope: Envelope) -> Envelope:
            self.handled["dispatch"] += 1
            self.active[name] += 1
            if self.active[name] > self.peak[name]:
                self.peak[name] = self.active[name]
            try:
                n = int(envelope.metadata.get("seq", 0))
                if n % suspend_every == 0:
                    await asyncio.sleep(0)
                if sleep_every and n % sleep_every == 0:
                    await asyncio.sleep(0.0005)
                envelope.outputs["seq"] = n
                envelope.outputs["by"] = name
                return envelope
            finally:
                self.active[name] -= 1

        return handle

    def register(self, bus: InMemoryCommBus, coordinator: CommBusCoordinator) -> None:
        """The consumer side: subscribers, handlers, services."""
        for sub in range(self.subscribers):
            bus.subscribe("LoadEvent", self.subscriber(sub))
        bus.register_handler("LoadCommand", self.on_command)
        bus.register_handler("LoadQuery", self.on_query)
        for name, capacity, suspend_every, sleep_every in SERVICES:
            coordinator.register_service(
                ServiceDescriptor(name=name, service_type="load", max_concurrent=capacity)
            )
            coordinator.register_handler(
                name, self.service_handler(name, capacity, suspend_every, sleep_every)
            )

    # ---- producer side

    async def _room(self, p: int) -> None:
        """Wait until producer ``p`` has fewer than ``window`` deliveries outstanding."""
        while self.outstanding[p] >= self.window:
            self.wake[p].clear()
            await asyncio.wait_for(self.wake[p].wait(), STALL_TIMEOUT)

    async def producer(self, p: int, bus: InMemoryCommBus, coordinator: CommBusCoordinator) -> None:
        i = p
        while not self.stop:
            pattern = PATTERNS[i % len(PATTERNS)]
            i += 1
            stats = self.stats[pattern]
            seq = self.seq[pattern][p]
            self.seq[pattern][p] = seq + 1
            if pattern in ("publish", "send"):
                try:
                    await self._room(p)
                except TimeoutError:
                    stats.errors["stalled"] += 1  # deliveries stopped arriving: give up
                    return
            start = time.perf_counter()
            try:
                if pattern == "publish":
                    self.outstanding[p] += self.subscribers
                    self.expected["publish"] += self.subscribers
                    await bus.publish(LoadEvent(p, seq, start))
                elif pattern == "send":
                    self.outstanding[p] += 1
                    self.expected["send"] += 1
                    await bus.send(LoadCommand(p, seq, start))
                elif pattern == "query":
                    result = await bus.query(LoadQuery(p, seq, start), timeout=QUERY_TIMEOUT)
                    if result != seq * 2 + 1:
                        stats.errors["wrong_result"] += 1
                        continue
                    self.expected["query"] += 1
                else:
                    if not await self._dispatch(p, seq, coordinator, start):
                        continue
            except TimeoutError:
                stats.errors["timeout"] += 1
                self._not_sent(pattern, p)
                continue
            except Exception as exc:
                stats.errors[f"exception:{type(exc).__name__}"] += 1
                self._not_sent(pattern, p)
                continue
            elapsed = time.perf_counter() - start
            stats.ops_total += 1
            if self.measuring:
                stats.ops += 1
                stats.call.add(elapsed)
                if pattern in ("query", "dispatch"):
                    stats.e2e.add(elapsed)

    def _not_sent(self, pattern: str, p: int) -> None:
        """A publish/send that raised did not leave: do not wait for it."""
        n = self.subscribers if pattern == "publish" else 1 if pattern == "send" else 0
        self.outstanding[p] -= n
        self.expected[pattern] -= n

    async def _dispatch(
        self, p: int, seq: int, coordinator: CommBusCoordinator, start: float
    ) -> bool:
        name = SERVICES[seq % len(SERVICES)][0]
        priority = PRIORITIES[(seq // len(SERVICES)) % len(PRIORITIES)]
        envelope = Envelope(
            request_context=RequestContext(request_id=f"p{p}-{seq}", capability="load"),
            metadata={"seq": seq},
        )
        target = DispatchTarget(
            service_name=name, method="run", priority=priority, timeout_seconds=DISPATCH_TIMEOUT
        )
        result = await coordinator.dispatch(target, envelope)
        stats = self.stats["dispatch"]
        if result.terminated:
            reason = result.termination_reason or "?"
            kind = "timeout" if "timed out" in reason else "terminated"
            stats.errors[kind] += 1
            return False
        if result.outputs.get("seq") != seq or result.outputs.get("by") != name:
            stats.errors["wrong_result"] += 1
            return False
        self.expected["dispatch"] += 1
        if self.measuring:
            self.by_priority[priority.value].add(time.perf_counter() - start)
        return True

    def drained(self) -> bool:
        return all(self.handled[p] >= self.expected[p] for p in ("publish", "send"))


# ---------------------------------------------------------------------- targets


@dataclass
class Setup:
    """One target, ready to load: where producers call, and how to take it down."""

    producer_bus: InMemoryCommBus
    producer_coordinator: CommBusCoordinator
    consumer_bus: InMemoryCommBus
    close: Callable[[], Awaitable[dict[str, Any]]]
    info: dict[str, Any]


def _coordinator(
    bus: InMemoryCommBus, logger: CountingLogger, tel: Telemetry
) -> CommBusCoordinator:
    return CommBusCoordinator(logger, bus, **tel.options())


def _bus(logger: CountingLogger, tel: Telemetry) -> InMemoryCommBus:
    return InMemoryCommBus(logger=logger, query_timeout=QUERY_TIMEOUT, **tel.options())


async def setup_inmemory(load: Load, logger: CountingLogger, tel: Telemetry) -> Setup:
    bus = _bus(logger, tel)
    coordinator = _coordinator(bus, logger, tel)
    load.register(bus, coordinator)

    async def close() -> dict[str, Any]:
        return {}

    return Setup(bus, coordinator, bus, close, {})


async def setup_broker(kind: str, load: Load, logger: CountingLogger, tel: Telemetry) -> Setup:
    transport_cls: type[BrokerTransport]
    if kind == "redis":
        from jeeves_control_tower.ipc.adapters.redis import RedisTransport

        transport_cls, url, prefix = RedisTransport, REDIS_URL, f"jtload:{uuid.uuid4().hex[:10]}:"
    else:
        from jeeves_control_tower.ipc.adapters.nats import NatsTransport

        transport_cls, url, prefix = NatsTransport, NATS_URL, f"jtload{uuid.uuid4().hex[:10]}"
    options = {
        "prefix": prefix,
        "registry": MESSAGES,
        "metrics_registry": tel.registry,
        "logger": logger,
    }
    connect: Any = transport_cls.connect
    consumer_bus, producer_bus = _bus(logger, tel), _bus(logger, tel)
    consumer_coordinator = _coordinator(consumer_bus, logger, tel)
    producer_coordinator = _coordinator(producer_bus, logger, tel)
    load.register(consumer_bus, consumer_coordinator)
    made: list[Any] = []
    try:
        consumer_tp = await connect(consumer_bus, url, **options)
        made.append(consumer_tp)
        producer_tp = await connect(producer_bus, url, **options)
        made.append(producer_tp)
        await consumer_tp.sync()
        consumer_rs = await RemoteServices(consumer_coordinator, consumer_tp, logger=logger).start()
        made.insert(0, consumer_rs)
        producer_rs = await RemoteServices(producer_coordinator, producer_tp, logger=logger).start()
        made.insert(0, producer_rs)
        await consumer_rs.announce()
        deadline = time.monotonic() + 10
        while not all(
            (s := producer_coordinator.get_service(name)) is not None and s.healthy
            for name, *_ in SERVICES
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind}: the services were not discovered within 10 s")
            await asyncio.sleep(0.05)
    except BaseException:
        for thing in made:
            with contextlib.suppress(Exception):
                await thing.close()
        await cleanup(kind, url, prefix)
        raise
    info = {"prefix": prefix, "server_version": await server_version(kind, url)}

    async def close() -> dict[str, Any]:
        backlog = await broker_backlog(kind, url, prefix, consumer_tp)
        dedupe = [
            len(mw)
            for bus in (consumer_bus, producer_bus)
            for mw in bus.middlewares
            if isinstance(mw, DedupeMiddleware)
        ]
        for thing in made:
            await thing.close()
        left = await cleanup(kind, url, prefix)
        return {"backlog_at_end": backlog, "dedupe_entries": dedupe, "left_after_cleanup": left}

    return Setup(producer_bus, producer_coordinator, consumer_bus, close, info)


async def server_version(kind: str, url: str) -> str:
    with contextlib.suppress(Exception):
        if kind == "redis":
            import redis.asyncio as aioredis

            r = aioredis.from_url(url)
            try:
                return str((await r.info("server"))["redis_version"])
            finally:
                await r.aclose()
        import nats

        nc = await nats.connect(url)
        try:
            return str(nc.connected_server_version)
        finally:
            await nc.close()
    return "?"


async def broker_backlog(kind: str, url: str, prefix: str, transport: Any) -> dict[str, Any]:
    """Commands still stored on the broker after the drain (should be none)."""
    with contextlib.suppress(Exception):
        if kind == "redis":
            import redis.asyncio as aioredis

            r = aioredis.from_url(url)
            try:
                stream = transport.destination("send", "LoadCommand")
                pending = await r.xpending(stream, "handlers")
                return {"stream_length": await r.xlen(stream), "pending": pending["pending"]}
            finally:
                await r.aclose()
        import nats

        nc = await nats.connect(url)
        try:
            info = await nc.jetstream().stream_info(f"{prefix}_commands")
            return {"stream_messages": info.state.messages}
        finally:
            await nc.close()
    return {"unknown": True}


async def cleanup(kind: str, url: str, prefix: str) -> int:
    """Delete this run's broker state; returns what is left (0: all gone)."""
    if kind == "redis":
        import redis.asyncio as aioredis

        r = aioredis.from_url(url)
        try:
            keys = [k async for k in r.scan_iter(match=f"{prefix}*", count=1000)]
            if keys:
                await r.delete(*keys)
            return len([k async for k in r.scan_iter(match=f"{prefix}*", count=1000)])
        finally:
            await r.aclose()
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        left = 0
        for name in (f"{prefix}_commands", f"{prefix}_dead"):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(name)
            try:
                await js.stream_info(name)
                left += 1
            except NotFoundError:
                pass
        return left
    finally:
        await nc.close()


# ---------------------------------------------------------------------- one target


async def run_target(
    kind: str, duration: float, warmup: float, args: argparse.Namespace
) -> dict[str, Any]:
    logger, tel = CountingLogger(), make_telemetry()
    stdlib = StdlibCounter()
    logging.getLogger().addHandler(stdlib)
    try:
        load = Load(args.producers, args.subscribers, args.window)
        if kind == "inmemory":
            setup = await setup_inmemory(load, logger, tel)
        else:
            setup = await setup_broker(kind, load, logger, tel)
        try:
            measured = await hold(load, setup, tel, duration, warmup, args)
        except BaseException:  # interrupted: still take the broker state down
            with contextlib.suppress(Exception):
                await setup.close()
            raise
        broker = await setup.close()
        metrics = metric_sums(tel.registry)
        tel.provider.shutdown()  # flushes the batch processor
    finally:
        logging.getLogger().removeHandler(stdlib)
    return report(kind, load, tel, logger, stdlib, metrics, {**measured, **setup.info, **broker})


async def hold(
    load: Load,
    setup: Setup,
    tel: Telemetry,
    duration: float,
    warmup: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Run the producers for ``duration`` seconds, stop them, let the consumers drain."""
    samples: list[tuple[float, float]] = []
    ticks = Histogram()
    t0 = time.perf_counter()

    async def sampler() -> None:
        while True:
            samples.append((round(time.perf_counter() - t0, 1), round(rss_mb(), 1)))
            await asyncio.sleep(args.sample_every)

    async def tick_probe() -> None:
        """How long one pass over the event loop's ready queue takes (a saturated loop
        makes every await that needs the loop, a broker round trip say, wait this long)."""
        while True:
            await asyncio.sleep(0.05)
            start = time.perf_counter()
            await asyncio.sleep(0)
            if load.measuring:
                ticks.add(time.perf_counter() - start)

    helpers = [asyncio.create_task(sampler()), asyncio.create_task(tick_probe())]
    tasks = [
        asyncio.create_task(load.producer(p, setup.producer_bus, setup.producer_coordinator))
        for p in range(args.producers)
    ]
    try:
        await asyncio.sleep(warmup)
        settle(tel)
        rss_warm = rss_mb()
        spans_warm = tel.ends.ended
        load.measuring = True
        measured_from, cpu_from = time.perf_counter(), cpu_seconds()
        await asyncio.sleep(duration - warmup)
        load.measuring = False
        measured = time.perf_counter() - measured_from
        cpu = cpu_seconds() - cpu_from
        load.stop = True
        _, hung = await asyncio.wait(tasks, timeout=QUERY_TIMEOUT + DISPATCH_TIMEOUT + 5)
        load.hung = len(hung)
        drain_start = time.perf_counter()
        if not load.drained():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(load.all_drained.wait(), DRAIN_TIMEOUT)
        drain_seconds = time.perf_counter() - drain_start
        await asyncio.sleep(0.2)  # anything arriving late (duplicates) shows up now
        settle(tel)
        rss_end = rss_mb()
    finally:
        # stop first: a cancellation can be lost (Python 3.11's wait_for swallows one that
        # races with the result), and a producer must not carry on then
        load.stop = True
        load.measuring = False
        for task in (*helpers, *tasks):
            task.cancel()
        await asyncio.gather(*helpers, *tasks, return_exceptions=True)
    samples.append((round(time.perf_counter() - t0, 1), round(rss_end, 1)))
    middle = warmup + (duration - warmup) / 2
    rss_middle = min(samples, key=lambda s: abs(s[0] - middle))[1]
    return {
        "measured_seconds": round(measured, 1),
        "warmup_seconds": warmup,
        "cpu_percent": round(100 * cpu / measured, 1),
        "loop_tick": ticks.summary(),
        "drain_seconds": round(drain_seconds, 2),
        "rss_mb_after_warmup": round(rss_warm, 1),
        "rss_mb_end": round(rss_end, 1),
        "rss_growth_mb": round(rss_end - rss_warm, 1),
        "rss_growth_second_half_mb": round(rss_end - rss_middle, 1),
        "rss_samples_mb": samples,
        "spans_during_warmup": spans_warm,
    }


def report(
    kind: str,
    load: Load,
    tel: Telemetry,
    logger: CountingLogger,
    stdlib: StdlibCounter,
    metrics: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    seconds = extra["measured_seconds"]
    patterns: dict[str, Any] = {}
    for p in PATTERNS:
        st = load.stats[p]
        errors: Counter[str] = Counter(st.errors)
        lost = load.expected[p] - load.handled[p]
        if lost > 0:
            errors["lost"] += lost
        elif lost < 0 and p in ("publish", "send"):
            errors["duplicates"] += -lost
        elif lost < 0:  # the handler ran but the call failed (already counted above)
            errors["handled_without_reply"] += -lost
        if load.out_of_order[p]:
            errors["out_of_order"] += load.out_of_order[p]
        patterns[p] = {
            "msg_per_s": round(st.ops / seconds, 1),
            "calls_measured": st.ops,
            "calls_total": st.ops_total,
            "deliveries_expected": load.expected[p],
            "deliveries_handled": load.handled[p],
            "sequence_gaps": load.gaps[p],
            "latency": st.e2e.summary(),
            "call_latency": st.call.summary(),
            "errors": sum(errors.values()),
            "error_kinds": dict(sorted(errors.items())),
        }
    patterns["publish"]["deliveries_per_s"] = round(
        patterns["publish"]["msg_per_s"] * load.subscribers, 1
    )
    violations = {
        name: {"max_concurrent": cap, "peak": load.peak[name]}
        for name, cap, *_ in SERVICES
        if load.peak[name] > cap
    }
    dropped = tel.ends.ended - tel.exporter.exported
    lib_errors = logger.of_level("error")
    checks = {
        "errors_per_pattern_zero": all(patterns[p]["errors"] == 0 for p in PATTERNS),
        "max_concurrent_respected": not violations,
        "no_producer_hung": load.hung == 0,
        "no_library_error_logs": not lib_errors,
        "no_stdlib_error_logs": not any(
            k.startswith(("ERROR:", "CRITICAL:")) for k in stdlib.counts
        ),
        "no_telemetry_errors": metrics["telemetry_errors"] == 0,
        "workload_messages_all_ok_in_metrics": not any(
            key.split(":", 2)[2].startswith("Load") for key in metrics["messages_not_ok"]
        ),
        "no_handler_errors_or_timeouts_in_metrics": metrics["handler_errors"] == 0
        and metrics["timeouts"] == 0,
        "inflight_back_to_zero": metrics["inflight_at_end"] == 0
        and metrics["service_load_at_end"] == 0,
    }
    return {
        "target": kind,
        "total_msg_per_s": round(sum(patterns[p]["msg_per_s"] for p in PATTERNS), 1),
        "patterns": patterns,
        "dispatch_latency_by_priority": {prio: h.summary() for prio, h in load.by_priority.items()},
        "service_peak_concurrency": {
            name: {"max_concurrent": cap, "peak": load.peak[name]} for name, cap, *_ in SERVICES
        },
        "max_concurrent_violations": violations,
        "producers_hung": load.hung,
        "spans": {"ended": tel.ends.ended, "exported": tel.exporter.exported, "dropped": dropped},
        "library_logs": {"errors": lib_errors, "warnings": logger.of_level("warning")},
        "library_first_errors": logger.first_errors,
        "third_party_warnings": dict(stdlib.counts),
        "metrics": metrics,
        **extra,
        "checks": checks,
        "ok": all(checks.values()),
    }


# ---------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = f.readline().split(":", 1)[1].strip()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory": mem,
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    out = {}
    for dist in (
        "jeeves-control-tower",
        "opentelemetry-sdk",
        "prometheus_client",
        "redis",
        "nats-py",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def table(results: dict[str, Any]) -> str:
    head = (
        f"{'target':9} {'pattern':9} {'msg/s':>8} {'p50 µs':>9} {'p99 µs':>9} {'max µs':>9}"
        f" {'errors':>7}  error kinds"
    )
    lines = [head, "-" * len(head)]
    for t in results["targets"].values():
        for p in PATTERNS:
            x = t["patterns"][p]
            lat = x["latency"]
            kinds = ", ".join(f"{k}={v}" for k, v in x["error_kinds"].items())
            lines.append(
                f"{t['target']:9} {p:9} {x['msg_per_s']:>8,.0f} {lat['p50_us']:>9,.0f}"
                f" {lat['p99_us']:>9,.0f} {lat['max_us']:>9,.0f} {x['errors']:>7}  {kinds}"
            )
        lines.append(f"{t['target']:9} {'total':9} {t['total_msg_per_s']:>8,.0f}")
        s = t["spans"]
        lines.append(
            f"{'':9} RSS {t['rss_mb_after_warmup']} MB after warm-up -> {t['rss_mb_end']} MB"
            f" at the end ({t['rss_growth_mb']:+} MB); spans ended {s['ended']:,},"
            f" dropped {s['dropped']:,}"
        )
        tick = t["loop_tick"]
        lines.append(
            f"{'':9} publish deliveries {t['patterns']['publish']['deliveries_per_s']:,.0f}/s;"
            f" CPU {t['cpu_percent']} % of a core; loop pass p50 {tick['p50_us'] / 1000:.1f} ms,"
            f" p99 {tick['p99_us'] / 1000:.1f} ms"
        )
        failed = [name for name, ok in t["checks"].items() if not ok]
        lines.append(
            f"{'':9} checks: {'all passed' if not failed else 'FAILED ' + ', '.join(failed)}"
        )
        lines.append("")
    lines.append(
        "latency: publish/send from the call to the end of the handler (per delivery);"
        " query/dispatch the call"
    )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    task = asyncio.current_task()
    if task is not None:  # SIGTERM as Ctrl-C: cancel, so the broker state is cleaned up
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    results: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "settings": {
            "duration_seconds": args.duration,
            "warmup_seconds": args.warmup,
            "producers": args.producers,
            "subscribers": args.subscribers,
            "window": args.window,
            "sample_every_seconds": args.sample_every,
            "mix": "publish, send, query, dispatch in turn per producer",
            "services": [
                {"name": n, "max_concurrent": c, "suspends_every": s, "sleeps_every": m}
                for n, c, s, m in SERVICES
            ],
            "span_processor": "BatchSpanProcessor(max_queue_size=65536,"
            " max_export_batch_size=2048), every span sampled",
        },
        "targets": {},
    }
    for kind in args.targets:
        print(f"{kind}: {args.duration:.0f} s ...", file=sys.stderr, flush=True)
        results["targets"][kind] = await run_target(kind, args.duration, args.warmup, args)
        gc.collect()
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["ok"] = all(t["ok"] for t in results["targets"].values())
    return results


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--duration", type=float, help="seconds per target (default 120)")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated")
    parser.add_argument("--quick", action="store_true", help="10 s per target (smoke check)")
    parser.add_argument("--warmup", type=float, help="seconds (default: duration / 8, max 15)")
    parser.add_argument("--producers", type=int, default=16)
    parser.add_argument("--subscribers", type=int, default=3)
    parser.add_argument("--window", type=int, default=16, help="deliveries in flight per producer")
    parser.add_argument("--sample-every", type=float, default=5.0, help="RSS sampling, seconds")
    parser.add_argument("--output", type=Path, help=f"JSON results (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 10.0 if args.quick else 120.0
    if args.warmup is None:
        args.warmup = min(15.0, args.duration / 8)
    if not 0 <= args.warmup < args.duration:
        parser.error("--warmup must be >= 0 and shorter than --duration")
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown or not args.targets:
        parser.error(f"unknown targets {unknown}; choose from {', '.join(TARGETS)}")
    if args.producers < 1 or args.subscribers < 1 or args.window < args.subscribers:
        parser.error("--producers, --subscribers >= 1 and --window >= --subscribers")
    if args.output is None and not args.quick:
        args.output = RESULTS
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    results = asyncio.run(run(args))
    print(table(results))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwritten to {args.output}")
    if not results["ok"]:
        print("\nFAILED: see the checks above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
