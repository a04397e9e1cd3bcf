"""How drained flow records become per-service dispatch counts: requests, errors, timeouts,
retries and seconds, per second (the history's rows) and all time (the flow recorder's
table), in one pass with no call per record (:func:`count_dispatches`; it runs for every
dispatch)."""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable
from typing import Any

__all__ = ["count_dispatches"]

#: ``row_of(name, at)``: the row ``[second, requests, errors, timeouts, retries, seconds]``
#: counting ``name``'s dispatches ended at ``at`` (a stored one, or one nobody keeps).
RowOf = Callable[[str, float], list[float]]


def count_dispatches(
    records: Iterable[tuple[Any, ...]],
    services: Container[str],
    row_of: RowOf,
    totals: dict[str, list[float]],
    limit: int,
) -> None:
    """Count the dispatch records among ``records`` (flow records, see
    :data:`~.flow.Raw`; others are skipped) of services in ``services``: each in the row of
    the second it ended (its ``ended``; ``None``: not counted) and in ``totals[name]``
    (``[requests, errors, timeouts, retries, seconds]``, made for a new name while ``totals``
    has fewer than ``limit``). The row and total of the last service and second are kept
    across records: a batch is mostly one service's, in one second."""
    name_now: str | None = None  # the service of row and total, until row_end
    row: list[float] = []
    total: list[float] = []
    row_end = 0.0
    for raw in records:
        if raw[1] != "dispatch":
            continue
        at = raw[10]
        if at is None:  # its service was not shown when it ended
            continue
        name = raw[3][0]
        seconds = raw[4]
        if name is not name_now or not row[0] <= at < row_end:
            if name not in services:
                name_now = None
                continue
            row = row_of(name, at)
            name_now, row_end, total = name, row[0] + 1.0, _total(totals, name, limit)
        row[1] += 1
        total[0] += 1
        outcome = raw[5]
        if outcome != "ok":
            if outcome == "timeout":
                row[3] += 1
                total[2] += 1
            else:
                row[2] += 1
                total[1] += 1
        retries = raw[9] - 1
        if retries > 0:
            row[4] += retries
            total[3] += retries
        row[5] += seconds
        total[4] += seconds


def _total(totals: dict[str, list[float]], name: str, limit: int) -> list[float]:
    found = totals.get(name)
    if found is None:
        found = [0, 0, 0, 0, 0.0]
        if len(totals) < limit:
            totals[name] = found
    return found
