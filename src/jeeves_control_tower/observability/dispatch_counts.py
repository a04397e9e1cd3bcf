"""How drained flow records become per-service dispatch counts: requests, errors, timeouts,
retries and seconds, per second (the history's rows) and all time (the flow recorder's
table), in one pass (:func:`count_dispatches`).

A drained batch is mostly one service's dispatches, all ended in the same second (a batch
is 128 records: a fraction of a millisecond of a busy coordinator). Such a batch is counted
whole, in C (``map``, ``list.count``, ``sum``: no Python step per record); any other batch
record by record, in one loop with no call per record. Both give the same counts (the
seconds summed in another order may differ in the last bits)."""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Sequence
from itertools import repeat
from operator import add, itemgetter
from typing import Any

__all__ = ["count_dispatches"]

#: ``row_of(name, at)``: the row ``[second, requests, errors, timeouts, retries, seconds]``
#: counting ``name``'s dispatches ended at ``at`` (a stored one, or one nobody keeps).
RowOf = Callable[[str, float], list[float]]

_STARTED, _PATTERN, _HANDLERS, _SECONDS = itemgetter(0), itemgetter(1), itemgetter(3), itemgetter(4)
_OUTCOME, _ATTEMPTS = itemgetter(5), itemgetter(9)


def count_dispatches(
    records: Sequence[tuple[Any, ...]],
    services: Container[str],
    offset: float,
    row_of: RowOf,
    totals: dict[str, list[float]],
    limit: int,
) -> None:
    """Count the dispatch records among ``records`` (flow records, see
    :data:`~.flow.Raw`; others are skipped) of services in ``services``: each in the row of
    the second it ended (``started + seconds + offset``) and in ``totals[name]``
    (``[requests, errors, timeouts, retries, seconds]``, made for a new name while ``totals``
    has fewer than ``limit``)."""
    if not _count_whole(records, services, offset, row_of, totals, limit):
        _count_each(records, services, offset, row_of, totals, limit)


def _total(totals: dict[str, list[float]], name: str, limit: int) -> list[float]:
    found = totals.get(name)
    if found is None:
        found = [0, 0, 0, 0, 0.0]
        if len(totals) < limit:
            totals[name] = found
    return found


def _count_whole(
    records: Sequence[tuple[Any, ...]],
    services: Container[str],
    offset: float,
    row_of: RowOf,
    totals: dict[str, list[float]],
    limit: int,
) -> bool:
    """Count ``records`` at once when they are all dispatches of one service that ended in
    the same second; ``False`` (nothing counted) otherwise."""
    n = len(records)
    if not n:
        return True
    if list(map(_PATTERN, records)).count("dispatch") != n:
        return False
    handlers = list(map(_HANDLERS, records))
    if handlers.count(handlers[0]) != n:
        return False
    ends = list(map(add, map(_STARTED, records), map(_SECONDS, records)))
    first, last = min(ends) + offset, max(ends) + offset
    if math.floor(first) != math.floor(last):
        return False
    name = handlers[0][0]
    if name not in services:
        return True
    outcomes = list(map(_OUTCOME, records))
    ok, timeouts = outcomes.count("ok"), outcomes.count("timeout")
    errors = n - ok - timeouts
    # attempts - 1 of each record that made more than one (0 attempts: no retry either)
    retries = sum(map(max, map(_ATTEMPTS, records), repeat(1))) - n
    seconds = sum(map(_SECONDS, records))
    row = row_of(name, last)
    total = _total(totals, name, limit)
    row[1] += n
    row[2] += errors
    row[3] += timeouts
    row[4] += retries
    row[5] += seconds
    total[0] += n
    total[1] += errors
    total[2] += timeouts
    total[3] += retries
    total[4] += seconds
    return True


def _count_each(
    records: Sequence[tuple[Any, ...]],
    services: Container[str],
    offset: float,
    row_of: RowOf,
    totals: dict[str, list[float]],
    limit: int,
) -> None:
    """Count ``records`` one by one (the row and total of the last service and second
    kept across records)."""
    name_now: str | None = None  # the service of row and total, until row_end
    row: list[float] = []
    total: list[float] = []
    row_end = 0.0
    for raw in records:
        if raw[1] != "dispatch":
            continue
        name = raw[3][0]
        seconds = raw[4]
        at = raw[0] + seconds + offset
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
