"""What the flow recorder counts of each drained batch: the ``(pattern, outcome)`` totals
behind ``/api/stats`` (:func:`count_outcomes`) and the table of per-service dispatch counts behind
``/api/services`` (:class:`ServiceStats`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

__all__ = ["ServiceStats", "count_outcomes"]

_PATTERN, _OUTCOME, _BOTH = itemgetter(1), itemgetter(5), itemgetter(1, 5)


def count_outcomes(
    counts: Counter[tuple[str, str]], batch: Sequence[tuple[Any, ...]]
) -> Counter[str]:
    """Add ``batch``'s records (see :data:`~.flow.Raw`) to ``counts`` by ``(pattern,
    outcome)``; the batch's patterns. A batch with one pattern or one outcome (the common
    case: one key) is found so with ``list.count`` and counted one key at a time, in C
    (perf: the drain runs this over every record)."""
    patterns = list(map(_PATTERN, batch))
    outcomes = list(map(_OUTCOME, batch))
    n = len(patterns)
    if n and patterns.count(patterns[0]) == n:
        pattern = patterns[0]
        if outcomes.count(outcomes[0]) == n:
            counts[pattern, outcomes[0]] += n
        else:
            for outcome, k in Counter(outcomes).items():
                counts[pattern, outcome] += k
        return Counter({pattern: n})
    by_pattern = Counter(patterns)
    if n and outcomes.count(outcomes[0]) == n:
        outcome = outcomes[0]
        for pattern, k in by_pattern.items():
            counts[pattern, outcome] += k
    else:
        counts.update(Counter(map(_BOTH, batch)))
    return by_pattern


class ServiceStats:
    """``name -> [requests, errors, timeouts, retries, seconds]`` for at most ``limit``
    services, counted by :meth:`.history.History.dispatches` in the loop that counts them
    per second. Not thread-safe: the recorder uses it under its lock."""

    __slots__ = ("limit", "table")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.table: dict[str, list[float]] = {}

    def of(self, name: str) -> list[float]:
        """A copy of ``name``'s counts (empty: none yet)."""
        return list(self.table.get(name, ()))

    def remove(self, name: str) -> None:
        self.table.pop(name, None)
