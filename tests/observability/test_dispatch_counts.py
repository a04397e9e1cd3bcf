"""count_dispatches: a drained batch of flow records counted per second and all time, as
counting its records one by one, in a reference written plainly, gives."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from jeeves_control_tower.observability.dispatch_counts import count_dispatches

OUTCOMES = ("ok", "ok", "ok", "error", "timeout", "cancelled", "overloaded")


def record(rng: random.Random, name: str, end: float, pattern: str = "dispatch") -> tuple[Any, ...]:
    seconds = rng.choice((0.0, 0.001, 0.25, 1.5))
    attempts = rng.choice((0, 1, 1, 1, 2, 3))
    outcome = rng.choice(OUTCOMES)
    raw = (end - seconds, pattern, "run", (name,), seconds, outcome, None, 0, None, attempts)
    return (*raw, end) if pattern == "dispatch" else raw


def reference(
    records: list[tuple[Any, ...]], services: set[str]
) -> tuple[dict[tuple[str, float], list[float]], dict[str, list[float]]]:
    """Each record on its own: ``{(name, second): [requests, errors, timeouts, retries,
    seconds]}`` and the totals per name."""
    rows: dict[tuple[str, float], list[float]] = {}
    totals: dict[str, list[float]] = {}
    for _, pattern, _, handlers, seconds, outcome, *_, attempts, ended in (
        (*r, None) if len(r) == 10 else r for r in records
    ):
        name = handlers[0]
        if pattern != "dispatch" or name not in services:
            continue
        second = float(math.floor(ended))
        add = [1, outcome not in ("ok", "timeout"), outcome == "timeout", max(attempts - 1, 0)]
        for counts in (rows.setdefault((name, second), [0, 0, 0, 0, 0.0]),
                       totals.setdefault(name, [0, 0, 0, 0, 0.0])):  # fmt: skip
            for i, k in enumerate(add):
                counts[i] += k
            counts[4] += seconds
    return rows, totals


def counted(
    records: list[tuple[Any, ...]], services: set[str], limit: int = 100
) -> tuple[dict[tuple[str, float], list[float]], dict[str, list[float]]]:
    rows: dict[tuple[str, float], list[float]] = {}

    def row_of(name: str, at: float) -> list[float]:
        second = float(math.floor(at))
        return rows.setdefault((name, second), [second, 0, 0, 0, 0, 0.0])

    totals: dict[str, list[float]] = {}
    count_dispatches(records, services, row_of, totals, limit)
    return {key: row[1:] for key, row in rows.items()}, totals


def same(a: dict[Any, list[float]], b: dict[Any, list[float]]) -> bool:
    return a.keys() == b.keys() and all(
        a[k][:4] == b[k][:4] and a[k][4] == pytest.approx(b[k][4]) for k in a
    )


@pytest.mark.parametrize("seed", range(40))
def test_a_batch_counts_as_its_records_one_by_one(seed: int) -> None:
    """Batches of one service in one second and every other kind: another service, a
    second boundary, bus records, services not shown, empty."""
    rng = random.Random(seed)
    base = rng.choice((500.0, 1_000_000.25)) + rng.random() * 0.5
    shape = seed % 5
    records = []
    for i in range(rng.choice((0, 1, 5, 128))):
        name = "a" if shape != 1 else rng.choice(("a", "b"))
        end = base + i * 1e-5 + (0.6 if shape == 2 and i % 3 == 0 else 0.0)
        pattern = "send" if shape == 3 and i % 4 == 0 else "dispatch"
        records.append(record(rng, name, end, pattern))
    services = {"a", "b"} if shape != 4 else {"b"}
    rows, totals = counted(records, services)
    want_rows, want_totals = reference(records, services)
    assert same(rows, want_rows) and same(totals, want_totals)


def test_retries_and_dispatches_with_no_attempt() -> None:
    """One service, one second: 0 attempts (refused before any) count no retry, 3 count
    two; every outcome but ok and timeout is an error."""
    records = [
        (10.0, "dispatch", "run", ("a",), 0.5, "ok", None, 0, None, 3, 10.5),
        (10.1, "dispatch", "run", ("a",), 0.0, "overloaded", None, 0, None, 0, 10.1),
        (10.2, "dispatch", "run", ("a",), 0.25, "timeout", None, 0, None, 1, 10.45),
        (10.3, "dispatch", "run", ("a",), 0.125, "error", None, 0, None, 2, 10.425),
    ]
    rows, totals = counted(records, {"a"})
    assert rows == {("a", 10.0): [4, 2, 1, 3, 0.875]}
    assert totals == {"a": [4, 2, 1, 3, 0.875]}


def test_past_the_limit_a_service_is_counted_in_rows_but_kept_in_no_total() -> None:
    records = [
        (10.0, "dispatch", "run", (name,), 0.0, "ok", None, 0, None, 1, 10.0) for name in "ab"
    ]
    rows, totals = counted(records, {"a", "b"}, limit=1)
    assert set(rows) == {("a", 10.0), ("b", 10.0)} and set(totals) == {"a"}
