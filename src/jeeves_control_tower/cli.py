"""``jeeves-ipc``: the command-line entry point.

``jeeves-ipc demo`` starts the demo system with its observability endpoint and runs until
Ctrl-C / SIGTERM (exit status 0) or for ``--duration`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be within 0..65535, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jeeves-ipc", description="Jeeves Control Tower: observable IPC for asyncio."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run the instrumented demo system and its observability endpoint",
        description="Run a demo system (flow/worker/vertical services, retries, timeouts,"
        " fan-out events, queries, a flapping service) and serve /metrics, /api/services,"
        " /api/flow, /api/stats and /healthz until stopped.",
    )
    demo.add_argument("--rate", type=_positive, default=20.0, help="operations per second")
    demo.add_argument("--duration", type=_positive, help="stop after S seconds (default: never)")
    demo.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    demo.add_argument("--port", type=_port, default=9464, help="port (default 9464; 0 = any)")
    demo.add_argument("--seed", type=int, help="random seed for a reproducible run")
    demo.add_argument(
        "--flap-period", type=_positive, default=30.0, help="billing is unhealthy once per S"
    )
    demo.add_argument(
        "--token",
        default=os.environ.get("JEEVES_TOKEN") or None,
        help="require this bearer token (default: $JEEVES_TOKEN, else none)",
    )
    demo.add_argument(
        "--otlp-endpoint",
        default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
        help="export spans over OTLP/HTTP to this base URL (default: $OTEL_EXPORTER_OTLP_ENDPOINT)",
    )
    demo.add_argument("-v", "--verbose", action="store_true", help="log every bus event")
    return parser


async def _demo(args: argparse.Namespace) -> None:
    from .demo import DemoConfig, run_demo
    from .logging import StdlibLoggerAdapter

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # not available on every platform, nor outside the main thread
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    logger = StdlibLoggerAdapter(logging.getLogger("jeeves.demo")) if args.verbose else None
    config = DemoConfig(
        rate=args.rate,
        seed=args.seed,
        flap_period=args.flap_period,
        flap_down=min(6.0, args.flap_period / 3),
    )
    started = time.monotonic()

    def ready(server: object, system: object) -> None:
        url = getattr(server, "url", "")
        print(f"Jeeves demo running at {url}", flush=True)
        print(f"  metrics  {url}/metrics", flush=True)
        print(f"  api      {url}/api/services  {url}/api/flow  {url}/api/stats", flush=True)
        print("Press Ctrl-C to stop.", flush=True)

    system = await run_demo(
        config,
        host=args.host,
        port=args.port,
        token=args.token,
        duration=args.duration,
        stop=stop,
        on_ready=ready,
        otlp_endpoint=args.otlp_endpoint,
        logger=logger,
    )
    total = sum(system.workload.started.values())
    elapsed = time.monotonic() - started
    print(f"Stopped after {elapsed:.1f}s: {total} operations started.", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        if args.verbose:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        try:
            asyncio.run(_demo(args))
        except OSError as exc:
            print(f"jeeves-ipc: cannot start the demo: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # a second Ctrl-C during shutdown
            return 0
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
