"""Property-based runs: random mixes of traffic and faults, invariants checked after each."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jeeves_control_tower.ipc import (
    CommBusCoordinator,
    InMemoryCommBus,
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

from .workload import AbortSevens, Ev, Q, behave

op = st.tuples(
    st.sampled_from(["publish", "query", "dispatch"]),
    st.sampled_from(["ok", "fail", "slow", "hang"]),
    st.sampled_from(list(SchedulingPriority)),
    st.integers(min_value=0, max_value=2),  # max_retries
    st.booleans(),  # cancel the caller
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(op, min_size=1, max_size=40), subscribers=st.integers(1, 4), cap=st.integers(1, 3)
)
def test_random_mix_keeps_invariants(ops: list[Any], subscribers: int, cap: int) -> None:
    asyncio.run(_run(ops, subscribers, cap))


async def _run(ops: list[Any], subscribers: int, cap: int) -> None:
    bus = InMemoryCommBus(instrument=False, query_timeout=0.05)
    bus.add_middleware(AbortSevens())
    coord = CommBusCoordinator(
        NullLogger(),
        bus,
        retry_policy=RetryPolicy(initial_delay=0.001, max_delay=0.002),
        instrument=False,
    )
    svc = ServiceDescriptor(name="svc", service_type="worker", max_concurrent=cap)
    coord.register_service(svc)
    seen: Counter[tuple[int, int]] = Counter()
    running = 0
    peak = 0

    def make_sub(i: int) -> Any:
        async def sub(e: Ev) -> None:
            seen[(e.n, i)] += 1
            await behave(e.behaviour)

        return sub

    for i in range(subscribers):
        bus.subscribe("Ev", make_sub(i))

    async def q_handler(q: Q) -> int:
        await behave(q.behaviour)
        return q.n

    bus.register_handler("Q", q_handler)

    async def d_handler(e: Envelope) -> Envelope:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await behave(e.metadata["behaviour"])
            return e
        finally:
            running -= 1

    coord.register_handler("svc", d_handler)

    tasks: list[tuple[str, int, bool, asyncio.Task[Any]]] = []
    for n, (kind, behaviour, prio, retries, cancel) in enumerate(ops, start=1):
        if kind == "publish":
            coro: Any = bus.publish(Ev(n, behaviour if behaviour != "hang" else "slow"))
        elif kind == "query":
            coro = bus.query(Q(n, behaviour))
        else:
            env = Envelope(
                request_context=RequestContext(request_id=str(n), capability="c"),
                metadata={"behaviour": behaviour},
            )
            target = DispatchTarget(
                service_name="svc",
                method="m",
                priority=prio,
                timeout_seconds=0.1,
                max_retries=retries,
            )
            coro = coord.dispatch(target, env)
        tasks.append((kind, n, cancel, asyncio.ensure_future(coro)))
    await asyncio.sleep(0)
    for _, _, cancel, task in tasks:
        if cancel:
            task.cancel()
    results = await asyncio.gather(*(t for *_, t in tasks), return_exceptions=True)

    for (kind, n, cancel, _), result in zip(tasks, results, strict=True):
        cancelled = isinstance(result, asyncio.CancelledError)
        if kind == "publish" and not cancelled:
            assert isinstance(result, type(None))  # publish never raises
            expected = 0 if n % 7 == 0 else 1
            assert [seen[(n, i)] for i in range(subscribers)] == [expected] * subscribers
        if kind == "dispatch" and not cancelled:
            assert isinstance(result, Envelope)  # exactly one outcome, never an exception
            assert result.terminated == (result.termination_reason is not None)
        if kind == "query" and not cancelled:
            if n % 7 == 0:
                assert isinstance(result, QueryAbortedError)
            else:
                assert result == n or isinstance(result, (RuntimeError, TimeoutError))
        if cancelled:
            assert cancel
    # every subscriber saw each delivered event at most once, cancelled ones included
    assert all(v == 1 for v in seen.values())
    assert peak <= cap
    assert svc.current_load == 0 and coord.queue_depth("svc") == 0
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
