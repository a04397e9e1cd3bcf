"""count_outcomes: the (pattern, outcome) totals of a drained batch, each way of counting."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from jeeves_control_tower.observability.flow_stats import count_outcomes


def raw(pattern: str, outcome: str) -> tuple[Any, ...]:
    return (0.0, pattern, "T", ("h",), 0.001, outcome, None, 0, None, 0)


@pytest.mark.parametrize(
    ("patterns", "outcomes"),
    [
        (["send"], ["ok"]),  # one key
        (["send", "publish", "dispatch"], ["ok"]),  # one outcome, several patterns
        (["query"], ["ok", "error", "timeout"]),  # one pattern, several outcomes
        (["send", "publish", "query"], ["ok", "error", "no_handler"]),  # neither
    ],
)
def test_every_batch_shape_adds_the_exact_pair_counts(
    patterns: list[str], outcomes: list[str]
) -> None:
    rng = random.Random(7)
    counts: Counter[tuple[str, str]] = Counter({("send", "ok"): 5})  # earlier batches
    expected = Counter(counts)
    for _ in range(3):
        batch = [raw(rng.choice(patterns), rng.choice(outcomes)) for _ in range(200)]
        seen = count_outcomes(counts, batch)
        expected.update((r[1], r[5]) for r in batch)
        assert seen == Counter(r[1] for r in batch)
    assert counts == expected
