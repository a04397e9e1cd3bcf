"""The command line: ``python benchmarks/bench_load.py [options]`` (see that file)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from .report import table
from .run import run
from .settings import RESULTS, TARGETS

DESCRIPTION = (
    "Load benchmark: a mixed workload held for minutes through the instrumented bus, in memory"
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
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
