"""What the flow recorder counts of each drained batch: the ``(pattern, outcome)`` totals
behind ``/api/stats`` (:func:`count_outcomes`) and the per-service dispatch counts behind
``/api/services`` (:class:`ServiceStats`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Container, Iterable, Sequence
from operator import itemgetter
from typing import Any

__all__ = ["ServiceStats", "count_outcomes"]

_PATTERN, _OUTCOME, _BOTH = itemgetter(1), itemgetter(5), itemgetter(1, 5)


def count_outcomes(
    counts: Counter[tuple[str, str]], batch: Sequence[tuple[Any, ...]]
) -> Counter[str]:
    """Add ``batch``'s records (see :data:`~.flow.Raw`) to ``counts`` by ``(pattern,
    outcome)``; the batch's patterns. A batch with one outcome or one pattern (the common
    case) is counted one key at a time, a third faster than a pair per record."""
    patterns = Counter(map(_PATTERN, batch))
    outcomes = Counter(map(_OUTCOME, batch))
    if len(outcomes) == 1:
        (outcome,) = outcomes
        for pattern, n in patterns.items():
            counts[pattern, outcome] += n
    elif len(patterns) == 1:
        (pattern,) = patterns
        for outcome, n in outcomes.items():
            counts[pattern, outcome] += n
    else:
        counts.update(Counter(map(_BOTH, batch)))
    return patterns


class ServiceStats:
    """``name -> [requests, errors, timeouts, retries, seconds]`` for at most ``limit``
    services. Not thread-safe: the recorder calls it under its lock."""

    __slots__ = ("limit", "table")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.table: dict[str, list[float]] = {}

    def fold(self, batch: Iterable[tuple[Any, ...]], services: Container[str]) -> None:
        """Count the dispatch records of ``batch`` (flow records, see
        :data:`~.flow.Raw`) of services in ``services``, in one loop with no call per
        record (this runs for every dispatch)."""
        table, limit = self.table, self.limit
        for raw in batch:
            if raw[1] != "dispatch":
                continue
            name = raw[3][0]
            stats = table.get(name)
            if stats is None:
                if name not in services or len(table) >= limit:
                    continue
                stats = table[name] = [0, 0, 0, 0, 0.0]
            stats[0] += 1
            outcome = raw[5]
            if outcome != "ok":
                stats[2 if outcome == "timeout" else 1] += 1
            if raw[9] > 1:
                stats[3] += raw[9] - 1
            stats[4] += raw[4]

    def of(self, name: str) -> list[float]:
        """A copy of ``name``'s counts (empty: none yet)."""
        return list(self.table.get(name, ()))

    def remove(self, name: str) -> None:
        self.table.pop(name, None)
