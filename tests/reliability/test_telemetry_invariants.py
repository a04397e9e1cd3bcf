"""Property-based runs through an *instrumented* bus and coordinator: the telemetry must
agree with what actually happened.

Random mixes of publish/send/query/dispatch with failing, slow and hanging handlers,
middleware aborts and cancelled callers run against a private Prometheus registry and a
private SDK tracer provider. After each run:

- ``commbus_messages_total`` per ``(pattern, outcome)`` equals the outcomes counted here
  from what the callers observed and what the handlers did;
- ``commbus_dispatch_total`` per outcome equals the outcomes of the returned envelopes
  (a cancelled caller counts as ``cancelled``);
- every ``commbus_inflight_messages`` gauge and the service load / queue-depth gauges are 0;
- every span that was started was ended (a counting span processor), exactly once.

A second property checks admission order: with ``max_concurrent=1`` and the slot held,
the dispatches queued behind it are admitted in (priority rank, arrival) order, cancelled
waiters skipped, and the dispatch metrics and gauges still balance.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import (
    CommBusCoordinator,
    InMemoryCommBus,
    NoHandlerError,
    QueryAbortedError,
    RetryPolicy,
)
from jeeves_control_tower.logging import NullLogger
from jeeves_control_tower.types import (
    DispatchTarget,
    Envelope,
    RequestContext,
    SchedulingPriority,
    ServiceDescriptor,
)

from .workload import AbortSevens, Cmd, Ev, Orphan, Q, behave

PATTERNS = ("publish", "send", "query")
#: What a query's caller observed -> the outcome the bus must count.
QUERY_OUTCOMES: dict[type, str] = {
    QueryAbortedError: "aborted",
    NoHandlerError: "no_handler",
    RuntimeError: "error",
    TimeoutError: "timeout",
}


class CountingProcessor(SpanProcessor):
    """Counts span starts and ends, and remembers which spans were ended twice."""

    def __init__(self) -> None:
        self.started: set[int] = set()
        self.ended: Counter[int] = Counter()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.started.add(span.get_span_context().span_id)

    def on_end(self, span: ReadableSpan) -> None:
        assert span.context is not None
        self.ended[span.context.span_id] += 1


class Instrumented:
    def __init__(self, cap: int) -> None:
        self.registry = CollectorRegistry()
        self.provider = TracerProvider(shutdown_on_exit=False)
        self.counting = CountingProcessor()
        self.exporter = InMemorySpanExporter()
        self.provider.add_span_processor(self.counting)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        options: dict[str, Any] = {
            "registry": self.registry,
            "tracer_provider": self.provider,
            "flow": False,
        }
        self.bus = InMemoryCommBus(query_timeout=0.05, logger=NullLogger(), **options)
        self.bus.add_middleware(AbortSevens())
        self.coord = CommBusCoordinator(
            NullLogger(),
            self.bus,
            retry_policy=RetryPolicy(initial_delay=0.001, max_delay=0.002),
            **options,
        )
        self.svc = ServiceDescriptor(name="svc", service_type="worker", max_concurrent=cap)
        self.coord.register_service(self.svc)

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def message_counts(self) -> Counter[tuple[str, str]]:
        found: Counter[tuple[str, str]] = Counter()
        for metric in self.registry.collect():
            for s in metric.samples:
                if s.name == "commbus_messages_total":
                    found[(s.labels["pattern"], s.labels["outcome"])] += int(s.value)
        return found

    def dispatch_counts(self) -> Counter[str]:
        found: Counter[str] = Counter()
        for metric in self.registry.collect():
            for s in metric.samples:
                if s.name == "commbus_dispatch_total":
                    found[s.labels["outcome"]] += int(s.value)
        return found

    def check_balanced(self) -> None:
        for pattern in (*PATTERNS, "dispatch"):
            assert self.value("commbus_inflight_messages", pattern=pattern) == 0, pattern
        assert self.value("commbus_service_load", service="svc") == 0
        assert self.value("commbus_service_queue_depth", service="svc") == 0
        assert self.svc.current_load == 0 and self.coord.queue_depth("svc") == 0
        c = self.counting
        assert c.started, "no span was started"
        assert c.started == set(c.ended), "a span was started and never ended"
        assert all(v == 1 for v in c.ended.values()), "a span was ended twice"
        assert len(self.exporter.get_finished_spans()) == len(c.started)

    def close(self) -> None:
        self.provider.shutdown()


def _envelope(n: int, behaviour: str) -> Envelope:
    return Envelope(
        request_context=RequestContext(request_id=str(n), capability="c"),
        metadata={"behaviour": behaviour},
    )


op = st.tuples(
    st.sampled_from(["publish", "send", "query", "orphan", "dispatch", "ghost"]),
    st.sampled_from(["ok", "fail", "slow", "hang"]),
    st.sampled_from(list(SchedulingPriority)),
    st.integers(min_value=0, max_value=2),  # max_retries
    st.booleans(),  # cancel the caller
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(op, min_size=1, max_size=30), subscribers=st.integers(1, 3), cap=st.integers(1, 3)
)
def test_metrics_and_spans_agree_with_what_happened(
    ops: list[Any], subscribers: int, cap: int
) -> None:
    asyncio.run(_run_mix(ops, subscribers, cap))


async def _run_mix(ops: list[Any], subscribers: int, cap: int) -> None:
    t = Instrumented(cap)
    bus, coord = t.bus, t.coord
    # what the handlers did, per message number
    ran: Counter[int] = Counter()
    raised: Counter[int] = Counter()

    async def handle(n: int, behaviour: str) -> None:
        ran[n] += 1
        try:
            await behave(behaviour)
        except RuntimeError:
            raised[n] += 1
            raise

    for _ in range(subscribers):
        bus.subscribe("Ev", lambda e: handle(e.n, e.behaviour))
    bus.register_handler("Cmd", lambda c: handle(c.n, c.behaviour))

    async def q_handler(q: Q) -> int:
        await handle(q.n, q.behaviour)
        return q.n

    bus.register_handler("Q", q_handler)

    async def d_handler(e: Envelope) -> Envelope:
        await behave(e.metadata["behaviour"])
        return e

    coord.register_handler("svc", d_handler)

    tasks: list[tuple[str, int, asyncio.Task[Any]]] = []
    for n, (kind, behaviour, prio, retries, _) in enumerate(ops, start=1):
        # publish and send have no timeout: a "hang" would only make the run slow
        calm = "slow" if behaviour == "hang" else behaviour
        if kind == "publish":
            coro: Any = bus.publish(Ev(n, calm))
        elif kind == "send":
            coro = bus.send(Cmd(n, calm))
        elif kind == "query":
            coro = bus.query(Q(n, behaviour))
        elif kind == "orphan":
            coro = bus.query(Orphan(n))
        else:
            target = DispatchTarget(
                service_name="svc" if kind == "dispatch" else "ghost",
                method="m",
                priority=prio,
                timeout_seconds=0.1,
                max_retries=retries,
            )
            coro = coord.dispatch(target, _envelope(n, behaviour))
        tasks.append((kind, n, asyncio.ensure_future(coro)))
    await asyncio.sleep(0)
    for (_, _, task), (*_, cancel) in zip(tasks, ops, strict=True):
        if cancel:
            task.cancel()
    results = await asyncio.gather(*(task for *_, task in tasks), return_exceptions=True)

    expected: Counter[tuple[str, str]] = Counter()
    dispatched: Counter[str] = Counter()
    for (kind, n, _), result in zip(tasks, results, strict=True):
        cancelled = isinstance(result, asyncio.CancelledError)
        if kind in ("dispatch", "ghost"):
            if cancelled:
                dispatched["cancelled"] += 1
            else:
                assert isinstance(result, Envelope)
                dispatched[result.errors[-1]["outcome"] if result.terminated else "ok"] += 1
            continue
        pattern = "query" if kind in ("query", "orphan") else kind
        if cancelled:
            outcome = "cancelled"
        elif pattern == "query":
            outcome = QUERY_OUTCOMES.get(type(result), "ok")
            if outcome == "ok":
                assert result == n
        else:
            assert result is None  # publish and send never raise
            if ran[n] == 0:
                outcome = "aborted"  # every type here has a handler: only an abort skips it
                assert n % 7 == 0
            else:
                outcome = "error" if raised[n] else "ok"
        expected[(pattern, outcome)] += 1

    assert t.message_counts() == expected
    assert t.dispatch_counts() == dispatched
    t.check_balanced()
    assert [x for x in asyncio.all_tasks() if x is not asyncio.current_task()] == []
    t.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    waiters=st.lists(
        st.tuples(st.sampled_from(list(SchedulingPriority)), st.booleans()),  # (priority, cancel)
        min_size=1,
        max_size=12,
    )
)
def test_queued_dispatches_are_admitted_by_priority_then_arrival(
    waiters: list[tuple[SchedulingPriority, bool]],
) -> None:
    asyncio.run(_run_priorities(waiters))


async def _run_priorities(waiters: list[tuple[SchedulingPriority, bool]]) -> None:
    t = Instrumented(cap=1)
    coord = t.coord
    gate = asyncio.Event()
    order: list[int] = []

    async def d_handler(e: Envelope) -> Envelope:
        n = int(e.request_context.request_id)
        order.append(n)
        if n == 0:
            await gate.wait()  # the holder keeps the one slot until the gate opens
        return e

    coord.register_handler("svc", d_handler)

    def target(priority: SchedulingPriority) -> DispatchTarget:
        return DispatchTarget(
            service_name="svc", method="m", priority=priority, timeout_seconds=5.0
        )

    holder = asyncio.ensure_future(
        coord.dispatch(target(SchedulingPriority.IDLE), _envelope(0, ""))
    )
    await asyncio.sleep(0)
    assert order == [0] and t.svc.current_load == 1
    queued: list[asyncio.Task[Envelope]] = []
    for n, (priority, _) in enumerate(waiters, start=1):
        queued.append(asyncio.ensure_future(coord.dispatch(target(priority), _envelope(n, ""))))
        await asyncio.sleep(0)
        assert coord.queue_depth("svc") == n  # waiting, in arrival order
        assert t.value("commbus_service_queue_depth", service="svc") == n
    for task, (_, cancel) in zip(queued, waiters, strict=True):
        if cancel:
            task.cancel()
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(holder, *queued, return_exceptions=True)

    kept = [(p.rank, n) for n, (p, cancel) in enumerate(waiters, start=1) if not cancel]
    assert order == [0, *(n for _, n in sorted(kept))]
    ok = [r for r in results if isinstance(r, Envelope)]
    assert all(not r.terminated for r in ok)
    assert len(ok) == 1 + len(kept)
    n_cancelled = sum(cancel for _, cancel in waiters)
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) == n_cancelled
    expected = Counter({"ok": len(ok), "cancelled": n_cancelled})
    assert t.dispatch_counts() == +expected
    t.check_balanced()
    t.close()
