"""What the encoder's depth check costs: ``WireCodec.encode`` of one command with the check
(the library) and with it taken out, side by side in one run, for payloads of several
shapes, beside the receiver's ``decode`` of the same frame (which makes the same check).

A frame that could nest deeper than ``max_depth`` is walked before it is sent, so that a
receiver never refuses it as ``too_deep`` after the sender was told it went out. A flat
payload is never walked; a JSON frame with no more brackets than ``max_depth`` neither.
Each round times every case once in an order drawn anew (a fixed seed); a case's figure is
the median over the rounds, and "with / without" the median of each round's ratio.
Diagnostic (no target). Run: ``PYTHONPATH=$PWD/src:$PWD .venv/bin/python
benchmarks/bench_codec_depth.py``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_hotpath import loadavg, machine  # benchmarks/ (run from this folder)

import jeeves_control_tower.ipc.adapters.wire.codec as codec_module
from jeeves_control_tower.ipc.adapters.wire import MessageRegistry, WireCodec


@dataclass
class Order:
    n: int
    note: str
    extra: Any = None
    tags: dict[str, str] = field(default_factory=dict)


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


SHAPES: dict[str, Any] = {
    "flat": None,
    "3-int list": [1, 2, 3],
    "1000-int list": list(range(1000)),
    "50 small dicts": [{"a": i, "b": "x"} for i in range(50)],
    "30 levels": _nested(28),  # a 30-deep frame: 30 brackets, within max_depth, not walked
}


def _per_call(run: Callable[[], Any], number: int) -> float:
    started = time.perf_counter()
    for _ in range(number):
        run()
    return (time.perf_counter() - started) / number


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--number", type=int, default=2000, help="calls per case per round")
    parser.add_argument("--output", type=Path, help="also write the figures there (JSON)")
    args = parser.parse_args()
    registry = MessageRegistry()
    registry.register(Order)
    codec = WireCodec(registry)
    real_check = codec_module.__dict__["deeper_than"]  # the check, swapped out below

    def without_check(obj: Any, data: bytes, limit: int, *, json_text: bool) -> bool:
        return False

    cases: list[tuple[str, str, Callable[[], Any]]] = []
    for shape, extra in SHAPES.items():
        message = Order(1, "n", extra)
        frame = codec.encode(message, pattern="send", message_id="m")

        def encode(message: Order = message) -> Any:
            return codec.encode(message, pattern="send", message_id="m")

        def decode(frame: bytes = frame) -> Any:
            return codec.decode(frame)

        cases += [(shape, "with", encode), (shape, "without", encode), (shape, "decode", decode)]
    times: dict[tuple[str, str], list[float]] = {(s, k): [] for s, k, _ in cases}
    ratios: dict[str, list[float]] = {shape: [] for shape in SHAPES}
    rng = random.Random(7)
    for _ in range(args.rounds):
        order = list(cases)
        rng.shuffle(order)
        this_round: dict[tuple[str, str], float] = {}
        for shape, kind, run in order:
            check = without_check if kind == "without" else real_check
            setattr(codec_module, "deeper_than", check)  # noqa: B010
            try:
                this_round[shape, kind] = _per_call(run, args.number)
            finally:
                setattr(codec_module, "deeper_than", real_check)  # noqa: B010
        for key, value in this_round.items():
            times[key].append(value)
        for shape in SHAPES:
            ratios[shape].append(this_round[shape, "with"] / this_round[shape, "without"])
    rows = {
        shape: {
            "encode_us": statistics.median(times[shape, "with"]) * 1e6,
            "encode_without_check_us": statistics.median(times[shape, "without"]) * 1e6,
            "with_over_without": statistics.median(ratios[shape]),
            "decode_us": statistics.median(times[shape, "decode"]) * 1e6,
        }
        for shape in SHAPES
    }
    print(f"{'payload':16} {'encode':>9} {'no check':>9} {'ratio':>6} {'decode':>9}  (µs)")
    for shape, row in rows.items():
        print(
            f"{shape:16} {row['encode_us']:9.2f} {row['encode_without_check_us']:9.2f}"
            f" {row['with_over_without']:6.2f} {row['decode_us']:9.2f}"
        )
    if args.output is not None:
        result = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "python": sys.version.split()[0],
            "loadavg": loadavg(),
            "rounds": args.rounds,
            "number": args.number,
            "orjson": codec.decoder.uses_orjson,
            "cases": rows,
        }
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
