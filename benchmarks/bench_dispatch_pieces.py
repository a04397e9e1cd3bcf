"""Where an instrumented dispatch's time goes: metrics + flow (tracing off) on the real
coordinator, with one piece taken out at a time, side by side in one run.

Cases (each a coordinator of its own, ``bench_hotpath.build_cases``' dispatch loop):

- ``off``: ``instrument=False``;
- ``null probe``: ``instrument=False`` plus a dispatch probe that does nothing (the seam's
  own cost: the in-flight count, the clock, the call, the registry telling an observer);
- ``metrics + flow``: the instrumented coordinator;
- then the same with one piece replaced by nothing: the load steps (the registry's load
  logs and hooks), the history's fold, the flow drain, the flow record (``FlowRecorder.dispatched``,
  with what it feeds), the metrics update (``DispatchMetrics.count``).

A piece's cost is what taking it out saves. Diagnostic only (the pieces overlap: the flow
record feeds the flow drain and the history); the targets are in
``bench_telemetry_cost.py``. Run: ``PYTHONPATH=$PWD/src:$PWD .venv/bin/python
benchmarks/bench_dispatch_pieces.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench_hotpath import build_cases  # benchmarks/ (run from this folder)
from prometheus_client import CollectorRegistry

from jeeves_control_tower.ipc import CommBusCoordinator
from jeeves_control_tower.observability import FlowRecorder

Loop = Callable[[int], Awaitable[None]]


class NullProbe:
    """A dispatch probe that only takes a dispatch out of flight."""

    observes_load = False

    def __init__(self) -> None:
        self.inflight = {"dispatch": 0}

    def dispatched(self, *args: Any) -> None:
        self.inflight["dispatch"] -= 1

    def service_changed(self, *args: Any) -> None:
        return None

    def service_removed(self, *args: Any) -> None:
        return None


def _coordinator(loop: Loop) -> CommBusCoordinator:
    for cell in loop.__closure__ or ():
        if isinstance(cell.cell_contents, CommBusCoordinator):
            return cell.cell_contents
    raise LookupError("no coordinator in the dispatch loop")


def _instrumented() -> tuple[Loop, CommBusCoordinator, FlowRecorder]:
    flow = FlowRecorder()
    loop = build_cases({"registry": CollectorRegistry(), "tracing": False, "flow": flow})[
        "dispatch"
    ]
    return loop, _coordinator(loop), flow


def cases() -> dict[str, Loop]:
    out: dict[str, Loop] = {"off": build_cases({"instrument": False})["dispatch"]}
    loop = build_cases({"instrument": False})["dispatch"]
    _coordinator(loop).set_dispatch_probe(NullProbe())
    out["null probe"] = loop
    out["metrics + flow"] = _instrumented()[0]
    loop, coordinator, _ = _instrumented()
    registry = coordinator._registry
    registry._load_hooks = registry._load_logs = ()
    registry._one_log = None
    out["- load steps"] = loop
    loop, _, flow = _instrumented()
    flow.history._drain_locked = flow.history.handoff.clear  # type: ignore[method-assign]
    flow.history.dispatches = lambda *args: flow.history.handoff.clear()  # type: ignore[method-assign]
    out["- history fold"] = loop
    loop, _, flow = _instrumented()
    flow._drain = flow.handoff.clear  # type: ignore[method-assign]
    out["- flow drain"] = loop
    loop, _, flow = _instrumented()
    flow.dispatched = lambda *args: None  # type: ignore[method-assign]
    out["- flow record"] = loop
    loop, coordinator, _ = _instrumented()
    probe = coordinator.dispatch_probe
    assert probe is not None
    probe.metrics.count = lambda *args: None  # type: ignore[attr-defined]
    out["- metrics update"] = loop
    return out


async def measure(loops: dict[str, Loop], rounds: int, messages: int) -> dict[str, float]:
    """Best µs per dispatch of each case over ``rounds`` interleaved rounds."""
    best = dict.fromkeys(loops, float("inf"))
    for _ in range(rounds):
        for name, loop in loops.items():
            gc.collect()
            start = time.perf_counter()
            await loop(messages)
            best[name] = min(best[name], (time.perf_counter() - start) / messages * 1e6)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--messages", type=int, default=10_000)
    args = parser.parse_args(argv)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"run {when}, load average before {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    us = asyncio.run(measure(cases(), args.rounds, args.messages))
    full = us["metrics + flow"]
    for name, value in us.items():
        piece = f"  piece {full - value:.2f}" if name.startswith("-") else ""
        print(f"{name:16s} {value:6.2f} µs  added {value - us['off']:5.2f}{piece}")


if __name__ == "__main__":
    main()
