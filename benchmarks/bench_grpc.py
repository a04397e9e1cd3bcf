"""gRPC hub benchmark: the bus through the hub next to raw grpcio, in one run.

Everything runs in this one process on one event loop (as the other adapter benchmarks),
telemetry off, on loopback:

- **query**: one-at-a-time round trip p50/p99 of ``await bus.query(...)`` from a process
  joined to the hub, answered by another joined process: two hops (caller -> hub ->
  responder and back), on the long-lived Connect streams. Raw: one grpcio unary call to an
  echo method of a plain ``grpc.aio`` server (one hop). Target: p50 <= 1.3x raw.
- **publish**: throughput of ``await bus.publish(...)`` one after another from a joined
  process until a subscriber in another joined process saw them all (through the hub).
  Raw: a plain ``grpc.aio`` server streaming the same number of messages of the same size
  to a client that reads them all. Target: >= 0.7x raw.

Raw and hub are measured alternately, round by round (medians of the throughput rounds),
and the query round trips one by one (raw, hub, raw, hub...; samples pooled), so machine
noise hits both alike.

For reference (no target), after those: the same two hops through a minimal raw grpcio
relay (a caller stream -> a relay server -> a responder stream and back, no bus, no codec,
one message per write, as the hub), alternating one by one with the raw unary echo in a
phase of its own (the pair above is measured as before): what gRPC alone costs for two
hops, i.e. the floor under the hub's query.

Run: ``.venv/bin/python benchmarks/bench_grpc.py [--quick] [--out FILE]`` or
``benchmarks/bench_adapters.py --only grpc``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from jeeves_control_tower.ipc import InMemoryCommBus
from jeeves_control_tower.ipc.adapters import MessageRegistry
from jeeves_control_tower.ipc.adapters.grpc import GrpcTransport, serve_grpc

RESULTS = Path(__file__).parent / "results" / "grpc.json"
PAYLOAD = "x" * 64


@dataclass
class Tick:
    n: int
    body: str = PAYLOAD


@dataclass
class Ask:
    n: int
    body: str = PAYLOAD


REGISTRY = MessageRegistry()
REGISTRY.register(Tick)
REGISTRY.register(Ask)
#: What the raw side moves per message: about the size of an event frame of Tick.
RAW = json.dumps(
    {"v": 1, "id": "0123456789abcdef_1", "type": "Tick", "pattern": "publish",
     "payload": {"n": 1, "body": PAYLOAD}}
).encode()  # fmt: skip

_identity = lambda b: b  # noqa: E731 - (de)serialiser of raw bytes


class Raw:
    """A plain grpc.aio server (unary echo, server stream) and a client of it."""

    async def start(self, quick: bool) -> None:
        async def echo(request: bytes, context: Any) -> bytes:
            return request

        async def stream(request: bytes, context: Any) -> Any:
            for _ in range(int(request)):
                yield RAW

        server = grpc.aio.server()
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(echo, _identity, _identity),
            "Stream": grpc.unary_stream_rpc_method_handler(stream, _identity, _identity),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("raw.Raw", handlers),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self.server = server
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.echo = self.channel.unary_unary("/raw.Raw/Echo", _identity, _identity)
        self.stream = self.channel.unary_stream("/raw.Raw/Stream", _identity, _identity)

    async def query(self, i: int) -> None:
        await self.echo(RAW)

    async def publish_many(self, n: int) -> float:
        start = time.perf_counter()
        got = 0
        async for _ in self.stream(str(n).encode()):
            got += 1
        assert got == n
        return n / (time.perf_counter() - start)

    async def close(self) -> None:
        await self.channel.close()
        await self.server.stop(0)


class Relay:
    """Two hops with raw grpcio only: caller stream -> relay server -> responder stream
    -> relay server -> caller stream (bytes as they come, one write per message)."""

    async def start(self, quick: bool) -> None:
        self.streams: dict[bytes, Any] = {}
        ready = asyncio.Event()

        async def connect(requests: Any, context: Any) -> None:
            name = await context.read()
            self.streams[name] = context
            if len(self.streams) == 2:
                ready.set()
            other = b"B" if name == b"A" else b"A"
            while (message := await context.read()) is not grpc.aio.EOF:
                await ready.wait()
                await self.streams[other].write(message)

        server = grpc.aio.server()
        handler = grpc.stream_stream_rpc_method_handler(connect, _identity, _identity)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("raw.Relay", {"Connect": handler}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self.server = server
        self.channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in "AB"]
        self.a, self.b = (
            ch.stream_stream("/raw.Relay/Connect", _identity, _identity)() for ch in self.channels
        )
        await self.a.write(b"A")
        await self.b.write(b"B")

        async def echo() -> None:
            while (message := await self.b.read()) is not grpc.aio.EOF:
                await self.b.write(message)

        self.responder = asyncio.get_running_loop().create_task(echo())
        await ready.wait()

    async def query(self, i: int) -> None:
        await self.a.write(RAW)
        await self.a.read()

    async def close(self) -> None:
        self.responder.cancel()
        self.a.cancel()
        self.b.cancel()
        for channel in self.channels:
            await channel.close()
        await self.server.stop(0)


class Hub:
    """A hub and two processes joined to it: ``a`` asks and publishes, ``b`` answers and
    subscribes."""

    async def start(self, quick: bool) -> None:
        self.hub = await serve_grpc(
            InMemoryCommBus(instrument=False), port=0, metrics=False, registry=REGISTRY
        )
        self.a = InMemoryCommBus(instrument=False)
        self.b = InMemoryCommBus(instrument=False)
        options = {"registry": REGISTRY, "metrics": False, "dedupe": False}
        self.ta = await GrpcTransport.connect(self.a, self.hub.address, **options)
        self.tb = await GrpcTransport.connect(self.b, self.hub.address, **options)
        self.seen = 0
        self.done = asyncio.Event()
        self.target = 0

        def on_tick(event: Tick) -> None:
            self.seen += 1
            if self.seen >= self.target:
                self.done.set()

        self.b.subscribe("Tick", on_tick)
        self.b.register_handler("Ask", lambda q: q.n)
        await self.tb.sync()

    async def query(self, i: int) -> None:
        await self.a.query(Ask(i))

    async def publish_many(self, n: int) -> float:
        self.done.clear()
        self.target = self.seen + n
        start = time.perf_counter()
        publish = self.a.publish
        for i in range(n):
            await publish(Tick(i))
        await asyncio.wait_for(self.done.wait(), 120)
        return n / (time.perf_counter() - start)

    async def close(self) -> None:
        await self.ta.close()
        await self.tb.close()
        await self.hub.close(grace=0)


def stats(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)
    return {
        "p50_us": round(samples[len(samples) // 2] * 1e6, 1),
        "p99_us": round(samples[int(len(samples) * 0.99)] * 1e6, 1),
    }


async def latencies(sides: Mapping[str, Raw | Hub | Relay], n: int) -> dict[str, list[float]]:
    """``n`` round trips on each side, interleaved one by one (raw, hub, raw, hub...), so
    that a burst of load on the shared machine hits both alike."""
    out: dict[str, list[float]] = {who: [] for who in sides}
    clock = time.perf_counter
    for i in range(n):
        for who, side in sides.items():
            start = clock()
            await side.query(i)
            out[who].append(clock() - start)
    return out


async def run(quick: bool = False) -> dict[str, Any]:
    n = {"pub": 5_000, "query": 300} if quick else {"pub": 20_000, "query": 4_000}
    rounds = 2 if quick else 5
    sides: dict[str, Raw | Hub] = {"raw": Raw(), "hub": Hub()}
    tput: dict[str, list[float]] = {w: [] for w in sides}
    lats: dict[str, list[float]] = {w: [] for w in sides}
    for side in sides.values():
        await side.start(quick)
    try:
        for side in sides.values():  # warm-up
            await side.publish_many(1000)
        await latencies(sides, 100)
        for _ in range(rounds):
            for who, side in sides.items():
                tput[who].append(await side.publish_many(n["pub"]))
            for who, samples in (await latencies(sides, n["query"] // rounds)).items():
                lats[who] += samples
        relay = Relay()
        await relay.start(quick)
        try:
            pair: dict[str, Raw | Hub | Relay] = {"raw": sides["raw"], "relay": relay}
            await latencies(pair, 100)
            floor = await latencies(pair, n["query"] // 2)
        finally:
            await relay.close()
    finally:
        for side in sides.values():
            await side.close()
    out: dict[str, Any] = {
        who: {"publish_msgs_per_s": round(statistics.median(tput[who])), "query": stats(lats[who])}
        for who in sides
    }
    publish_ratio = round(out["hub"]["publish_msgs_per_s"] / out["raw"]["publish_msgs_per_s"], 2)
    query_ratio = round(out["hub"]["query"]["p50_us"] / out["raw"]["query"]["p50_us"], 2)
    reference: dict[str, Any] = {who: stats(samples) for who, samples in floor.items()}
    reference["relay_p50_ratio"] = round(
        reference["relay"]["p50_us"] / reference["raw"]["p50_us"], 2
    )
    return {
        "generated_at": datetime.now(UTC).isoformat(),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "grpcio": grpc.__version__,
        },
        "messages": n,
        "rounds": rounds,
        **out,
        "targets": {
            "publish_throughput_ratio": publish_ratio,
            "publish_ok": publish_ratio >= 0.7,
            "query_p50_ratio": query_ratio,
            "query_ok": query_ratio <= 1.3,
        },
        "reference_two_hop_raw_relay": reference,
    }


def table(results: dict[str, Any]) -> str:
    lines = [f"{'':5} {'publish msg/s':>14} {'query p50 µs':>13} {'query p99 µs':>13}"]
    for who in ("raw", "hub"):
        r = results[who]
        lines.append(
            f"{who:5} {r['publish_msgs_per_s']:>14} {r['query']['p50_us']:>13}"
            f" {r['query']['p99_us']:>13}"
        )
    t = results["targets"]
    lines.append(
        f"grpc: publish throughput {t['publish_throughput_ratio']}x raw server stream (target"
        f" >= 0.7: {'met' if t['publish_ok'] else 'MISSED'}), query p50 {t['query_p50_ratio']}x"
        f" raw unary echo (target <= 1.3: {'met' if t['query_ok'] else 'MISSED'});"
        f" a raw grpcio two-hop relay {results['reference_two_hop_raw_relay']['relay_p50_ratio']}x"
        " (the floor, no target);"
        f" load average {results['machine']['loadavg_1m']} at the end"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages (smoke run)")
    parser.add_argument("--out", type=Path, help=f"results file (default {RESULTS}, full runs)")
    args = parser.parse_args()
    results = asyncio.run(run(args.quick))
    print(table(results))
    out = args.out or (None if args.quick else RESULTS)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
