"""How :class:`~.history.History` computes an ``/api/history`` answer from the stored
seconds it copied (outside its lock): the bucket grid, time-weighted gauges, summed
counters. Pure functions of their arguments."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

__all__ = ["bucket_grid", "copy_series", "counter_view", "gauge_view"]

# A stored gauge second: [second, integral up to t_last, peak, last value, t_last].
_Gauge = list[float]


def copy_series(buckets: deque[list[float]]) -> list[list[float]]:
    out = list(buckets)
    if out:
        out[-1] = list(out[-1])
    return out


def bucket_grid(since: float, now: float, step: int) -> list[tuple[float, float]]:
    """``[start, end)`` buckets aligned to multiples of ``step``, clipped to
    ``[since, now]``."""
    out = []
    start = math.floor(since / step) * step
    while start < now:
        out.append((max(start, since), min(start + step, now)))
        start += step
    return out


def gauge_view(
    buckets: list[_Gauge], first: float, grid: list[tuple[float, float]], now: float
) -> Any:
    """Time-weighted average and peak per grid bucket and over the whole grid.

    Grid boundaries are whole seconds (the last ends at ``now``), so a stored second lies
    inside one grid bucket; a second without a stored entry holds the last value before
    it. Time before the series began (``first``) is not covered."""
    avgs: list[float | None] = []
    peaks: list[float | None] = []
    total = covered = 0.0
    overall: float | None = None
    n = len(buckets)
    i = 0
    value: float | None = None  # the value holding at ``position``
    for start, end in grid:
        integral = span = 0.0
        peak: float | None = None
        position = max(start, first)
        while position < end:
            while i < n and buckets[i][0] + 1 <= position:
                value = buckets[i][3]
                i += 1
            if i < n and buckets[i][0] <= position:
                b = buckets[i]
                hi = min(b[0] + 1, now)
                integral += b[1] + b[3] * max(0.0, hi - b[4])
                span += hi - max(b[0], first)
                peak = b[2] if peak is None else max(peak, b[2])
                value = b[3]
                i += 1
                position = b[0] + 1
                continue
            nxt = min(end, float(buckets[i][0])) if i < n else end
            if value is not None:
                integral += value * (nxt - position)
                span += nxt - position
                peak = value if peak is None else max(peak, value)
            position = nxt
        avgs.append(round(integral / span, 3) if span > 0 else None)
        peaks.append(peak)
        total += integral
        covered += span
        if peak is not None:
            overall = peak if overall is None else max(overall, peak)
    return {
        "avg": round(total / covered, 3) if covered > 0 else None,
        "peak": overall,
        "avgs": avgs,
        "peaks": peaks,
    }


def counter_view(
    buckets: list[list[float]], names: tuple[str, ...], grid: list[tuple[float, float]]
) -> dict[str, Any]:
    """Per grid bucket and total sums of each counter in ``names``."""
    sums = [[0.0] * len(grid) for _ in names]
    if grid:
        lo = grid[0][0]
        starts = [s for s, _ in grid]
        j = 0
        for row in buckets:
            second = row[0]
            if second + 1 <= lo or second >= grid[-1][1]:
                continue
            while j + 1 < len(starts) and starts[j + 1] <= second:
                j += 1
            for k in range(len(names)):
                sums[k][j] += row[k + 1]
    out: dict[str, Any] = {}
    for name, values in zip(names, sums, strict=True):
        rounded = [round(v, 6) for v in values]
        out[name] = {"total": round(sum(values), 6), "buckets": rounded}
    return out
