"""The stored seconds of one series of the :class:`~.history.History`: a gauge's
(:class:`GaugeSeries`, a step function) or a counter's (:class:`CounterSeries`, sums). Not
thread-safe: the history applies changes to them under its lock."""

from __future__ import annotations

import math
from collections import deque

__all__ = ["CounterSeries", "Gauge", "GaugeSeries"]

#: A stored gauge second: [second, integral up to t_last, peak, last value, t_last].
Gauge = list[float]


class GaugeSeries:
    """A gauge's stored seconds (see :mod:`.history`): the step function of its value."""

    __slots__ = ("buckets", "first")

    def __init__(self, horizon: int, at: float) -> None:
        self.buckets: deque[Gauge] = deque(maxlen=horizon + 1)
        self.first = at  # the series is defined from here on

    def set(self, value: float, at: float) -> None:
        buckets = self.buckets
        if not buckets:  # the series starts here: no time before ``at`` is covered
            value = float(value)
            buckets.append([float(math.floor(at)), 0.0, value, value, at])
            return
        b = buckets[-1]
        before = b[3]
        if before == value:
            return  # no change: nothing to store (the step function goes on as it was)
        value = float(value)
        if at < b[4]:  # stamped before the last change (the wall clock stepped back, or
            at = b[4]  # another writer thread's stamp came first): no time counted twice
        if at < b[0] + 1.0:  # the same second
            b[1] += before * (at - b[4])
            b[3] = value
            b[4] = at
            if value > b[2]:
                b[2] = value
            return
        second = float(math.floor(at))
        buckets.append([second, before * (at - second), max(before, value), value, at])


class CounterSeries:
    """A counter's stored seconds: ``[second, *sums]`` each."""

    __slots__ = ("buckets", "width")

    def __init__(self, horizon: int, width: int) -> None:
        self.buckets: deque[list[float]] = deque(maxlen=horizon + 1)
        self.width = width

    def row(self, at: float) -> list[float]:
        """The stored second of ``at``, ``[second, *sums]``: the newest (made when it is not
        there yet), or an older one (a count handed off late: by a recorder that drained
        after another one, or stamped by a clock that stepped back), made in its place
        when missing; older than all the ring keeps when it is full: a row nobody keeps."""
        buckets = self.buckets
        if buckets:
            row = buckets[-1]
            if row[0] <= at < row[0] + 1.0:
                return row
            if at < row[0]:
                return self._older(float(math.floor(at)))
        row = [float(math.floor(at)), *([0.0] * self.width)]
        buckets.append(row)
        return row

    def _older(self, second: float) -> list[float]:
        buckets = self.buckets
        made = [second, *([0.0] * self.width)]
        for i in range(len(buckets) - 1, -1, -1):  # newest first: late counts are recent
            found = buckets[i]
            if found[0] == second:  # a new copy: a read may share the one stored (it copies
                found = buckets[i] = list(found)  # only the newest second, which changes)
                return found
            if found[0] < second:
                if len(buckets) == buckets.maxlen:  # full: the oldest second goes first
                    buckets.popleft()
                    i -= 1
                buckets.insert(i + 1, made)
                return made
        if len(buckets) != buckets.maxlen:
            buckets.appendleft(made)
        return made
