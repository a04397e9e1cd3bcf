"""ServiceStats: the per-service dispatch counts behind ``/api/services``, folded from the
flow recorder's dispatch records."""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Any

__all__ = ["ServiceStats"]


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
