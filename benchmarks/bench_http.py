"""HttpService benchmark: a dispatch to an HTTP service next to a raw httpx2 POST of the same
JSON to the same server, in one run.

The server is a Starlette echo endpoint under uvicorn in a child process (so it does not
share the client's event loop or its CPU time slice). One request at a time, client and
coordinator telemetry off; raw and HttpService rounds alternate so machine noise hits both
alike. Reports p50/p99 round trip and the ratio HttpService / raw (the cost of the
dispatcher, the envelope JSON both ways, the headers and the answer checks), and writes
``benchmarks/results/http.json``.

Run: ``.venv/bin/python benchmarks/bench_http.py [--rounds N] [--per-round N] [--out FILE]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus
from jeeves_control_tower.ipc.adapters.http import HttpPool, HttpService
from jeeves_control_tower.ipc.adapters.http.envelope import request_body
from jeeves_control_tower.logging import NullLogger
from jeeves_control_tower.types import DispatchTarget, Envelope, RequestContext, ServiceDescriptor

RESULTS = Path(__file__).parent / "results" / "http.json"
SERVER = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

async def echo(request: Request) -> Response:
    body = await request.body()
    return Response(b'{"outputs": {"ok": 1}}', media_type="application/json")

app = Starlette(routes=[Route("/d", echo, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error", ws="none")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def envelope() -> Envelope:
    return Envelope(request_context=RequestContext(request_id="bench", capability="c"))


async def measure(port: int, rounds: int, per_round: int) -> dict[str, list[float]]:
    url = f"http://127.0.0.1:{port}/d"
    pool = HttpPool()
    try:
        client = pool.client()
        for _ in range(200):
            try:
                await client.post(url, content=b"{}")
                break
            except httpx2.TransportError:
                await asyncio.sleep(0.05)
        coordinator = CommBusCoordinator(
            NullLogger(), InMemoryCommBus(instrument=False), instrument=False
        )
        coordinator.register_service(ServiceDescriptor(name="svc", service_type="w"))
        coordinator.register_handler("svc", HttpService(url, pool=pool, metrics=False))
        target = DispatchTarget("svc", "run", timeout_seconds=10)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}

        async def raw() -> None:
            body = request_body(target, 1, envelope())
            r = await client.post(url, content=body, headers=headers)
            json.loads(r.content)

        async def service() -> None:
            out = await coordinator.dispatch(target, envelope())
            assert not out.terminated, out.termination_reason

        samples: dict[str, list[float]] = {"raw": [], "http_service": []}
        for fn in (raw, service):  # warm-up
            for _ in range(50):
                await fn()
        for _ in range(rounds):
            for name, fn in (("raw", raw), ("http_service", service)):
                for _ in range(per_round):
                    began = time.perf_counter()
                    await fn()
                    samples[name].append((time.perf_counter() - began) * 1e6)
    finally:
        await pool.aclose()
    return samples


def main(rounds: int, per_round: int, out: Path) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        samples = asyncio.run(measure(port, rounds, per_round))
    finally:
        server.terminate()
        server.wait(10)

    def stats(xs: list[float]) -> dict[str, float]:
        xs = sorted(xs)
        return {
            "p50_us": round(statistics.median(xs), 1),
            "p99_us": round(xs[int(len(xs) * 0.99) - 1], 1),
        }

    result = {k: stats(v) for k, v in samples.items()}
    ratio = result["http_service"]["p50_us"] / result["raw"]["p50_us"]
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "httpx2": httpx2.__version__,
        "requests_per_side": rounds * per_round,
        "results": result,
        "p50_ratio_http_service_over_raw": round(ratio, 3),
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'':14}{'p50 µs':>10}{'p99 µs':>10}")
    for name, s in result.items():
        print(f"{name:14}{s['p50_us']:>10}{s['p99_us']:>10}")
    print(f"p50 ratio HttpService / raw httpx2: {ratio:.2f}x  -> {out}")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    main(args.rounds, args.per_round, args.out)
