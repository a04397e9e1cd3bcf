"""Running the benchmark: each target in turn, held for ``--duration`` seconds, then drained."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any

from procstats import rss_mb  # benchmarks/procstats.py (run from this folder)

from .measure import CountingLogger, Histogram, StdlibCounter, cpu_seconds
from .report import machine, report, versions
from .settings import DISPATCH_TIMEOUT, DRAIN_TIMEOUT, QUERY_TIMEOUT, SERVICES
from .targets import Setup, setup_broker, setup_inmemory
from .telemetry import Telemetry, make_telemetry, metric_sums, settle
from .workload import Load


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
