"""History: the bounded, server-side past behind ``/api/history`` (shape in
``docs/endpoint.md``).

Two kinds of series, both at one-second resolution and kept for ``horizon`` seconds:

* **gauges** (a service's load, i.e. its in-flight dispatches, and its queue depth) are
  recorded on every change, as a step function: each stored second holds the integral of
  the value over the part of that second up to its last change, the peak and the last
  value. A second with no change is not stored; its value is the last value before it. So
  a time-weighted average and a peak over any window are exact, and an idle service costs
  nothing.
* **counters** (dispatches, errors, timeouts and retries of a service; events, errors and
  handler seconds of a bus handler) are summed per second.

Bounds: at most ``horizon`` stored seconds per series (a ring), at most ``max_series``
services and as many handlers (later ones are not tracked). Writers (hooks on event-loop
threads) take no lock: each change is handed off with the time it happened (a ``deque``
append, atomic) and applied in hand-off order, under one short lock, by the next reader
(or by a writer once per 64 changes, so memory stays bounded when nobody reads).
So readers on the HTTP server's threads see every change up to their read, exactly;
:meth:`History.snapshot` copies under the lock and computes outside it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

__all__ = ["DEFAULT_HORIZON", "MAX_BUCKETS", "History", "history_body", "history_params"]

DEFAULT_HORIZON = 900
#: Most buckets one ``/api/history`` answer may ask for: ``window / step`` above this is
#: refused (each bucket costs a number per series, and there may be 512 series).
MAX_BUCKETS = 300
#: Per service: dispatches, errors, timeouts, retries, seconds (dispatch durations summed).
SERVICE_COUNTERS = ("requests", "errors", "timeouts", "retries", "seconds")
#: Per bus handler: runs, failed runs, seconds (handler durations summed).
HANDLER_COUNTERS = ("events", "errors", "seconds")

#: Changes a writer hands off before it applies them itself (nobody read them meanwhile).
_DRAIN_AT = 64
# A stored gauge second: [second, integral up to t_last, peak, last value, t_last].
_Gauge = list[float]


class _GaugeSeries:
    __slots__ = ("buckets", "first")

    def __init__(self, horizon: int, at: float) -> None:
        self.buckets: deque[_Gauge] = deque(maxlen=horizon)
        self.first = at  # the series is defined from here on

    def set(self, value: float, at: float) -> None:
        buckets = self.buckets
        if buckets and buckets[-1][3] == value:
            return  # no change: nothing to store (the step function goes on as it was)
        second = math.floor(at)
        if buckets and buckets[-1][0] == second:
            b = buckets[-1]
            b[1] += b[3] * max(0.0, at - b[4])
            b[3] = value
            b[4] = at
            if value > b[2]:
                b[2] = value
            return
        if not buckets:  # the series starts here: no time before ``at`` is covered
            buckets.append([second, 0.0, value, value, at])
            return
        before = buckets[-1][3]
        buckets.append([second, before * (at - second), max(before, value), value, at])


class _CounterSeries:
    __slots__ = ("buckets", "width")

    def __init__(self, horizon: int, width: int) -> None:
        self.buckets: deque[list[float]] = deque(maxlen=horizon)
        self.width = width

    def add(self, at: float, values: Iterable[float]) -> None:
        second = math.floor(at)
        buckets = self.buckets
        if not buckets or buckets[-1][0] != second:
            buckets.append([second, *([0.0] * self.width)])
        row = buckets[-1]
        for i, v in enumerate(values, start=1):
            row[i] += v


class History:
    """Per-service gauges and counters, per-handler counters, over the last ``horizon``
    seconds. ``clock`` (Unix seconds) is injectable for tests."""

    def __init__(
        self,
        horizon: int = DEFAULT_HORIZON,
        *,
        max_series: int = 256,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon < 1:
            raise ValueError(f"horizon must be an int >= 1, got {horizon!r}")
        self.horizon = horizon
        self.max_series = max_series
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: deque[tuple[Any, ...]] = deque()  # changes handed off, not applied yet
        self._gauges: dict[str, tuple[_GaugeSeries, _GaugeSeries]] = {}  # load, queue
        self._capacity: dict[str, int] = {}
        self._services: dict[str, _CounterSeries] = {}
        self._handlers: dict[str, _CounterSeries] = {}
        self.started = clock()

    # ------------------------------------------------------------------ recording
    # Writers take no lock: each change is handed off with its time (a deque append, atomic)
    # and applied, in hand-off order, under the lock by the next reader (or by a writer,
    # once per _DRAIN_AT changes, so the hand-off stays bounded when nobody reads).

    def service_state(self, name: str, load: int, queue_depth: int, capacity: int) -> None:
        """A service's load, queue depth or capacity changed (or it registered)."""
        pending = self._pending
        pending.append((self._service_state, self._clock(), name, load, queue_depth, capacity))
        if len(pending) >= _DRAIN_AT:
            self._drain()

    def service_removed(self, name: str) -> None:
        self._pending.append((self._service_removed, 0.0, name))
        self._drain()

    def dispatch(self, name: str, outcome: str, retries: int, seconds: float) -> None:
        """A dispatch to ``name`` ended with ``outcome`` after ``retries`` extra attempts."""
        pending = self._pending
        pending.append((self._dispatch, self._clock(), name, outcome, retries, seconds))
        if len(pending) >= _DRAIN_AT:
            self._drain()

    def handler_run(self, name: str, failed: bool, seconds: float) -> None:
        """A bus handler (subscriber, send or query handler) finished one run."""
        pending = self._pending
        pending.append((self._handler_run, self._clock(), name, failed, seconds))
        if len(pending) >= _DRAIN_AT:
            self._drain()

    def _drain(self) -> None:
        with self._lock:
            self._drain_locked()

    def _drain_locked(self) -> None:
        pending = self._pending
        popleft = pending.popleft
        for _ in range(len(pending)):
            event = popleft()
            event[0](*event[1:])

    def _service_state(
        self, at: float, name: str, load: int, queue_depth: int, capacity: int
    ) -> None:
        pair = self._gauges.get(name)
        if pair is None:
            if len(self._gauges) >= self.max_series:
                return
            pair = self._gauges[name] = (
                _GaugeSeries(self.horizon, at),
                _GaugeSeries(self.horizon, at),
            )
        pair[0].set(float(load), at)
        pair[1].set(float(queue_depth), at)
        self._capacity[name] = capacity

    def _service_removed(self, at: float, name: str) -> None:
        self._gauges.pop(name, None)
        self._capacity.pop(name, None)
        self._services.pop(name, None)

    def _dispatch(self, at: float, name: str, outcome: str, retries: int, seconds: float) -> None:
        error = 1.0 if outcome not in ("ok", "timeout") else 0.0
        timeout = 1.0 if outcome == "timeout" else 0.0
        series = self._counter(self._services, name, len(SERVICE_COUNTERS))
        if series is not None:
            series.add(at, (1.0, error, timeout, float(retries), seconds))

    def _handler_run(self, at: float, name: str, failed: bool, seconds: float) -> None:
        series = self._counter(self._handlers, name, len(HANDLER_COUNTERS))
        if series is not None:
            series.add(at, (1.0, 1.0 if failed else 0.0, seconds))

    def _counter(
        self, table: dict[str, _CounterSeries], name: str, width: int
    ) -> _CounterSeries | None:
        series = table.get(name)
        if series is None and len(table) < self.max_series:
            series = table[name] = _CounterSeries(self.horizon, width)
        return series

    # ------------------------------------------------------------------ reading

    def snapshot(self, window: float, step: int) -> dict[str, Any]:
        """The ``/api/history`` body: the last ``window`` seconds (1..``horizon``) in
        buckets of ``step`` whole seconds (1..``window``), oldest first.

        ``since`` is where the data begins, on a whole second: ``now - window``, or later
        when the history is younger than the window (a rate or an average is over
        ``generated_at - since``, never over the nominal window). Bucket starts are
        multiples of ``step`` (the first starts at ``since``); the last ends at ``now``."""
        if isinstance(window, bool) or not isinstance(window, (int, float)):
            raise ValueError("window must be a number")
        if not 1 <= window <= self.horizon:
            raise ValueError(f"window must be within 1..{self.horizon}")
        if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= window:
            raise ValueError("step must be an int within 1..window")
        # Only the newest stored second of a series is ever mutated: copy it, share the rest
        # (the lock is held for pointer copies, not for the computation).
        with self._lock:
            self._drain_locked()
            # Read after the drain: every change applied was stamped before it (a change
            # stamped after ``now`` would add load past the end of the span it is averaged
            # over); a change handed off later waits for the next read.
            now = self._clock()
            gauges = {
                n: (g[0].first, _copy(g[0].buckets), _copy(g[1].buckets))
                for n, g in self._gauges.items()
            }
            capacity = dict(self._capacity)
            services = {n: _copy(s.buckets) for n, s in self._services.items()}
            handlers = {n: _copy(s.buckets) for n, s in self._handlers.items()}
        since = float(math.floor(max(now - window, self.started)))
        grid = _grid(since, now, step)
        out_services: dict[str, Any] = {}
        for name in sorted(set(gauges) | set(services)):
            entry: dict[str, Any] = {"capacity": capacity.get(name, 0)}
            if name in gauges:
                first, load, queue = gauges[name]
                entry["load"] = _gauge(load, first, grid, now)
                entry["queue"] = _gauge(queue, first, grid, now)
            entry.update(_counters(services.get(name, []), SERVICE_COUNTERS, grid))
            out_services[name] = entry
        return {
            "generated_at": round(now, 3),
            "since": round(since, 3),
            "step": step,
            "buckets": [round(start, 3) for start, _ in grid],
            "services": out_services,
            "handlers": {n: _counters(b, HANDLER_COUNTERS, grid) for n, b in handlers.items()},
        }


def _copy(buckets: deque[list[float]]) -> list[list[float]]:
    out = list(buckets)
    if out:
        out[-1] = list(out[-1])
    return out


def _grid(since: float, now: float, step: int) -> list[tuple[float, float]]:
    """``[start, end)`` buckets aligned to multiples of ``step``, clipped to
    ``[since, now]``."""
    out = []
    start = math.floor(since / step) * step
    while start < now:
        out.append((max(start, since), min(start + step, now)))
        start += step
    return out


def _gauge(buckets: list[_Gauge], first: float, grid: list[tuple[float, float]], now: float) -> Any:
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


def _counters(
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


def history_params(history: History, query: str) -> tuple[int, int]:
    """``(window, step)`` of a raw ``/api/history`` query string ``window=S&step=S``
    (defaults 300 and 5; ``window / step`` at most :data:`MAX_BUCKETS`), or
    ``ValueError`` with a client-facing message."""
    params = parse_qs(query, keep_blank_values=True)
    unknown = set(params) - {"window", "step"}
    if unknown:
        raise ValueError(f"unknown parameter(s): {', '.join(sorted(unknown))[:200]}")
    values = {}
    for name, default, high in (("window", 300, history.horizon), ("step", 5, history.horizon)):
        given = params.get(name)
        if given and len(given) > 1:
            raise ValueError(f"{name} given more than once")
        text = given[0].strip() if given else str(default)
        if not (text.isascii() and text.isdigit()) or len(text) > 6 or not 1 <= int(text) <= high:
            raise ValueError(f"{name} must be an integer within 1..{high}")
        values[name] = int(text)
    window = min(values["window"], history.horizon)
    step = min(values["step"], window)
    if window > MAX_BUCKETS * step:
        raise ValueError(f"window / step must be at most {MAX_BUCKETS} (buckets per answer)")
    return window, step


def history_body(history: History, query: str) -> dict[str, Any]:
    """The ``/api/history`` body for a raw query string (see :func:`history_params`)."""
    return history.snapshot(*history_params(history, query))
