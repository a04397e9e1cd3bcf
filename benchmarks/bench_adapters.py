"""Adapter benchmark: the bus over Redis and NATS next to the raw client, in one run.

For each broker it measures, producer and consumer in this one process (one event loop,
as the raw baselines), telemetry off:

- **publish**: throughput (one ``await bus.publish`` after another: the adapters queue a
  publish in order and return; raw: pipelined redis-py ``PUBLISH`` batches of 100 /
  nats-py ``publish``) until the subscriber saw them all, and one-at-a-time latency from
  publish to the subscriber (p50/p99);
- **send** (durable): throughput (windows of 100 concurrent sends, consumer ``prefetch=100``;
  raw: pipelined ``XADD`` -> ``XREADGROUP COUNT 100`` -> ``XACK`` / JetStream publish ->
  pull ``fetch(100)`` -> ack) until all were handled, and one-at-a-time latency;
- **query**: one-at-a-time round trip p50/p99 (raw: redis-py request/reply over two
  Pub/Sub channels / nats-py ``request``).

Targets (issue 14): publish throughput >= 0.8x raw; query p50 within 1.2x of raw, in
each of three consecutive runs.
Raw and adapter are measured alternately, round by round (medians of the throughput
rounds), and within a round the latency samples alternate in blocks of 50 (pooled), so
machine noise hits both alike. Before each timed phase (each throughput measurement,
each pattern's latency blocks of a round) the garbage collector runs (``gc.collect()``,
outside the timing), so each phase pays for the collections its own allocations trigger,
not for what the phase before it left behind (the round order raw -> adapter would
otherwise bill the adapter's publish phase for the raw JetStream send phase's survivors).
A full run compares each broker in a fresh child process (``--only``), raw and adapter
side by side in it as before: the NATS comparison does not inherit the Redis half's heap
(redis-py and hiredis imported add about 16,000 objects for every full collection to
walk). Prints a table with the ratios (adapter / raw) and writes
``benchmarks/results/adapters.json``, with the load average (1 min) at the start and end
of each broker's comparison.

Run: ``.venv/bin/python benchmarks/bench_adapters.py [--quick] [--only redis|nats|rabbitmq]
[--out FILE]`` (``--only`` writes no results unless ``--out`` is given; needs Redis on
127.0.0.1:6379 and NATS with JetStream on 127.0.0.1:4222, or JT_REDIS_URL/JT_NATS_URL).
``--only grpc`` runs :mod:`bench_grpc` instead (the hub next to raw grpcio; no broker).
RabbitMQ runs only with ``--only rabbitmq``: three clients side by side, see
``bench_rabbitmq.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapter_sides import (  # benchmarks/ (run from this folder, as bench_core_ab's bench_hotpath)
    LATENCY_BLOCK,
    adapter_side,
    measure_latency,
    measure_throughput,
    raw_nats_side,
    raw_redis_side,
    stats,
)

RESULTS = Path(__file__).parent / "results" / "adapters.json"


async def compare(kind: str, n: dict[str, int], rounds: int) -> dict[str, Any]:
    """Raw and adapter measured alternately, round by round, so machine noise hits both."""
    raw = await (raw_redis_side() if kind == "redis" else raw_nats_side())
    adapter = await adapter_side(kind)
    sides = {"raw": raw, "adapter": adapter}
    tput: dict[str, dict[str, list[float]]] = {w: {"publish": [], "send": []} for w in sides}
    lats: dict[str, dict[str, list[float]]] = {
        w: {"publish": [], "send": [], "query": []} for w in sides
    }
    try:
        for side in sides.values():  # warm-up
            await measure_throughput(side, "publish", 1000)
            await measure_latency(side, "query", 100)
        for _ in range(rounds):
            for who, side in sides.items():
                for pattern, count in (("publish", n["pub"]), ("send", n["send"])):
                    try:
                        tput[who][pattern].append(await measure_throughput(side, pattern, count))
                    except TimeoutError as exc:
                        raise RuntimeError(f"{kind} {who} {pattern}: {exc!r}") from exc
            for pattern in ("publish", "send", "query"):
                count = (n["query"] if pattern == "query" else n["lat"]) // rounds
                gc.collect()  # outside the timing, as for throughput
                # Blocks of LATENCY_BLOCK samples, raw and adapter in turn: both sample the
                # machine's load as it changes within the round.
                for start in range(0, count, LATENCY_BLOCK):
                    for who, side in sides.items():
                        block = min(LATENCY_BLOCK, count - start)
                        try:
                            lats[who][pattern] += await measure_latency(side, pattern, block)
                        except TimeoutError as exc:
                            raise RuntimeError(f"{kind} {who} {pattern}: {exc!r}") from exc
    finally:
        for side in sides.values():
            await side.close()
    out: dict[str, Any] = {}
    for who in sides:
        out[who] = {}
        for pattern in ("publish", "send", "query"):
            s = stats(lats[who][pattern])
            t = statistics.median(tput[who][pattern]) if pattern != "query" else 1e6 / s["mean_us"]
            out[who][pattern] = {"throughput": round(t), **s}
    return out


# ---------------------------------------------------------------------- report


def ratios(adapter: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    return {
        p: {
            "throughput": round(adapter[p]["throughput"] / raw[p]["throughput"], 2),
            "p50": round(adapter[p]["p50_us"] / raw[p]["p50_us"], 2),
            "p99": round(adapter[p]["p99_us"] / raw[p]["p99_us"], 2),
        }
        for p in ("publish", "send", "query")
    }


def table(results: dict[str, Any]) -> str:
    head = f"{'broker':6} {'pattern':8} {'':8} {'msg/s':>9} {'p50 µs':>9} {'p99 µs':>9}"
    lines = [head, "-" * len(head)]
    for kind, r in results["brokers"].items():
        for p in ("publish", "send", "query"):
            for who in ("raw", "adapter"):
                x = r[who][p]
                lines.append(
                    f"{kind:6} {p:8} {who:8} {x['throughput']:>9} {x['p50_us']:>9} {x['p99_us']:>9}"
                )
            q = r["ratio"][p]
            lines.append(
                f"{'':6} {'':8} {'ratio':8} {q['throughput']:>9} {q['p50']:>9} {q['p99']:>9}"
            )
        t = r["targets"]
        load = r.get("load_average_1m")
        if load:
            lines.append(f"{kind}: load average (1 min) {load[0]} at the start, {load[1]} at end")
        lines.append(
            f"{kind}: publish throughput {t['publish_throughput_ratio']} (target >= 0.8:"
            f" {'met' if t['publish_ok'] else 'MISSED'}), query p50 {t['query_p50_ratio']}x"
            f" (target <= 1.2: {'met' if t['query_ok'] else 'MISSED'})"
        )
    return "\n".join(lines)


async def run(quick: bool, only: tuple[str, ...] = ("redis", "nats")) -> dict[str, Any]:
    n = {"pub": 20_000, "send": 5_000, "query": 4_000, "lat": 1_000}
    if quick:
        n = {"pub": 5_000, "send": 1_000, "query": 500, "lat": 300}
    brokers: dict[str, Any] = {}
    rounds = 2 if quick else 5
    for kind in only:
        load_before = os.getloadavg()[0]
        both = await compare(kind, n, rounds)
        r = ratios(both["adapter"], both["raw"])
        brokers[kind] = {
            "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "raw": both["raw"],
            "adapter": both["adapter"],
            "ratio": r,
            "targets": {
                "publish_throughput_ratio": r["publish"]["throughput"],
                "publish_ok": r["publish"]["throughput"] >= 0.8,
                "query_p50_ratio": r["query"]["p50"],
                "query_ok": r["query"]["p50"] <= 1.2,
            },
        }
    return {
        "generated_at": datetime.now(UTC).isoformat(),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "messages": n,
        "rounds": rounds,
        "brokers": brokers,
    }


def in_children(quick: bool) -> dict[str, Any]:
    """Each broker's comparison in a fresh process (``--only``), merged into one result."""
    merged: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("redis", "nats"):
            out = Path(tmp) / f"{kind}.json"
            cmd = [sys.executable, __file__, "--only", kind, "--out", str(out)]
            # its table is printed once, merged, below
            subprocess.run(
                [*cmd, *(["--quick"] if quick else [])], check=True, stdout=subprocess.DEVNULL
            )
            part = json.loads(out.read_text())
            if not merged:
                merged = part
            else:
                merged["brokers"].update(part["brokers"])
    merged["generated_at"] = datetime.now(UTC).isoformat()
    merged["processes"] = "one fresh process per broker"
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages (smoke run)")
    parser.add_argument(
        "--only", choices=("redis", "nats", "rabbitmq", "grpc"), help="one broker only"
    )
    parser.add_argument(
        "--out", type=Path, help=f"results file (default {RESULTS} for a full run of both)"
    )
    args = parser.parse_args()
    if args.only == "rabbitmq":  # three clients side by side: bench_rabbitmq.py
        import bench_rabbitmq

        amqp = asyncio.run(bench_rabbitmq.run(args.quick))
        amqp["generated_at"] = datetime.now(UTC).isoformat()
        print(bench_rabbitmq.table(amqp))
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(amqp, indent=2) + "\n")
        return
    if args.only == "grpc":
        import bench_grpc  # benchmarks/ (run from this folder, as bench_core_ab's bench_hotpath)

        grpc_results = asyncio.run(bench_grpc.run(args.quick))
        print(bench_grpc.table(grpc_results))
        if args.out is not None:
            args.out.write_text(json.dumps(grpc_results, indent=2) + "\n")
        return
    only = (args.only,) if args.only else ()
    results = asyncio.run(run(args.quick, only)) if only else in_children(args.quick)
    print(table(results))
    out = args.out or (None if args.quick or args.only else RESULTS)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
