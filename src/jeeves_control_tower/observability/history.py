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

Bounds: at most ``horizon + 1`` stored seconds per series (a ring: a full window
reaches back to ``floor(now - horizon)``), at most ``max_series``
services and as many handlers (later ones are not tracked). Writers (hooks on event-loop
threads) take no lock: each change is handed off with the time it happened (a ``deque``
append of a plain tuple, atomic) and applied in hand-off order, under one short lock, by
the next reader (or by a writer once 128 changes wait, 512 for the registry's load log,
so memory stays bounded when nobody reads). So readers on the HTTP server's threads see
every change up to their read, exactly; :meth:`History.snapshot` copies under the lock
and computes outside it (:mod:`.history_views`).

A dispatch costs two hand-offs, its slot taken and given back: the registry writes each
straight into the hand-off through :attr:`History.load_log` (a ``LoadLog``: no call into
Python but for the backstop drain). Its count comes from its flow record, stamped with
this history's clock when the dispatch ended: the :class:`~.flow.FlowRecorder` that feeds
this history counts each drained batch of records here (:meth:`History.dispatches`, one
loop, in the second each ended, however late it is drained), drains itself once per 128
records (and this history's hand-off with it, so the backstop is seldom reached), and is
drained by every read of this history first (:meth:`History.add_upstream`). A dispatch
that ends while a read runs may show in the next read only.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Container, Iterable
from typing import Any

from ..ipc.telemetry import LoadLog
from ._guard import ErrorReporter
from .dispatch_counts import count_dispatches
from .flow_stats import ServiceStats
from .history_query import MAX_BUCKETS, history_body, history_params
from .history_series import CounterSeries, Gauge, GaugeSeries
from .history_views import bucket_grid, copy_series, counter_view, gauge_view

__all__ = ["DEFAULT_HORIZON", "MAX_BUCKETS", "History", "history_body", "history_params"]

DEFAULT_HORIZON = 900
#: Per service: dispatches, errors, timeouts, retries, seconds (dispatch durations summed).
SERVICE_COUNTERS = ("requests", "errors", "timeouts", "retries", "seconds")
#: Per bus handler: runs, failed runs, seconds (handler durations summed).
HANDLER_COUNTERS = ("events", "errors", "seconds")
_ZEROS = (0.0,) * len(SERVICE_COUNTERS)

#: Changes a writer hands off before it applies them itself (nobody read them meanwhile).
_DRAIN_AT = 128
#: The same for the registry's load log: a backstop (a feeding flow recorder drains this
#: history with its own records, once per 128 dispatches, so about 256 steps).
_LOG_LIMIT = 4 * _DRAIN_AT
#: Kinds of hand-off (the first item of one; a load step, :data:`LoadStep`, starts with its
#: time instead: a number, never a string).
_STATE, _HANDLER, _REMOVED = "state", "handler", "removed"
# dispatch records, counted as History.dispatches counts them: a gone recorder's (see
# dispatches_left), or the one record of a dispatch told by History.dispatch
_RECORDS = "records"


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
        self.clock = clock
        self._lock = threading.Lock()
        #: Changes handed off, not applied yet (see "recording" below); ``clock`` stamps them.
        self.handoff: deque[tuple[Any, ...]] = deque()
        #: What a registry writes a change of a service's load alone to (straight into the
        #: hand-off, stamped with ``clock``): see ``RegistryObserver``.
        self.load_log = LoadLog(self.handoff.append, clock, self.handoff, _LOG_LIMIT, self.drain)
        # drains of the recorders that fold dispatches into this history (see dispatches())
        self._upstream: list[weakref.WeakMethod[Callable[[], None]]] = []
        self._gauges: dict[str, tuple[GaugeSeries, GaugeSeries]] = {}  # load, queue
        self._capacity: dict[str, int] = {}
        self._services: dict[str, CounterSeries] = {}
        self._handlers: dict[str, CounterSeries] = {}
        self.started = clock()

    # ------------------------------------------------------------------ recording
    # Writers take no lock: each change is handed off with its time (a deque append of a
    # plain tuple, atomic) and applied, in hand-off order, under the lock by the next reader
    # (or by a writer once per _DRAIN_AT changes, so the hand-off stays bounded when nobody
    # reads). A hand-off is (kind, time, name, ...), kind one of the codes above, or a
    # load step (LoadStep: its time first).

    def service_state(self, name: str, load: int, queue_depth: int, capacity: int) -> None:
        """A service's load, queue depth or capacity changed (or it registered)."""
        pending = self.handoff
        pending.append((_STATE, self.clock(), name, load, queue_depth, capacity))
        if len(pending) >= _DRAIN_AT:
            self.drain()

    def service_load(
        self, name: str, load: int, queue_depth: int | None = None, capacity: int | None = None
    ) -> None:
        """A service's load alone changed: its queue depth and capacity are as last told
        (the per-dispatch case; one for the slot taken, one for the slot given back).
        ``queue_depth`` and ``capacity``, when given, start the service's series here if it
        has none yet (one past ``max_series`` once another was removed), as
        :meth:`service_state` would; without them such a step is dropped."""
        pending = self.handoff
        pending.append((self.clock(), name, load, queue_depth, capacity))
        if len(pending) >= _DRAIN_AT:
            self.drain()

    def service_removed(self, name: str) -> None:
        self.handoff.append((_REMOVED, 0.0, name))
        self.drain()

    def dispatch(self, name: str, outcome: str, retries: int, seconds: float) -> None:
        """A dispatch to ``name`` ended with ``outcome`` after ``retries`` extra attempts
        (counted as a recorder's flow record of it would be, see :meth:`dispatches`)."""
        record = (0.0, "dispatch", "", (name,), seconds, outcome, None, 0, None, retries + 1)
        pending = self.handoff
        pending.append((_RECORDS, 0.0, ((*record, self.clock()),), (name,)))
        if len(pending) >= _DRAIN_AT:
            self.drain()

    def handler_run(self, name: str, failed: bool, seconds: float) -> None:
        """A bus handler (subscriber, send or query handler) finished one run."""
        pending = self.handoff
        pending.append((_HANDLER, self.clock(), name, failed, seconds))
        if len(pending) >= _DRAIN_AT:
            self.drain()

    def drain(self) -> None:
        """Apply what was handed off (any thread; a writer calls it once ``_DRAIN_AT``
        changes wait)."""
        with self._lock:
            self._drain_locked()

    def _drain_locked(self) -> None:
        """Apply what was handed off, in hand-off order (the lock is held). The per-dispatch
        kind (a load step) is applied inline: this is where its cost is. The newest stored
        second a load series last wrote is kept across events: consecutive steps of one
        service mostly fall in it. (A dispatch's count is not an event: a recorder's drain
        counts its records, :meth:`dispatches`.)"""
        pending = self.handoff
        batch = list(itertools.islice(iter(pending.popleft, None), len(pending)))  # in C
        gauges = self._gauges
        load_name: str | None = None  # its load series' newest second is b, until b_end
        b: Gauge = []
        b_end = 0.0
        events = iter(batch)
        try:
            for event in events:
                at = event[0]
                if at.__class__ is not str:  # a load step (LoadStep)
                    name, value = event[1], event[2]
                    if name is not load_name or not b[4] <= at < b_end:
                        pair = gauges.get(name)
                        if pair is None:  # not tracked (yet): start it when the step says enough
                            if event[3] is not None and event[4] is not None:
                                self._service_state(*event)
                            load_name = None
                            continue
                        buckets = pair[0].buckets
                        if not buckets or not buckets[-1][4] <= at < buckets[-1][0] + 1.0:
                            pair[0].set(value, at)  # a new second, or the series' first
                            b = buckets[-1]
                            load_name, b_end = name, b[0] + 1.0
                            continue
                        b = buckets[-1]
                        load_name, b_end = name, b[0] + 1.0
                    # GaugeSeries.set's common case inline: a change later in the same second
                    if b[3] != value:
                        b[1] += b[3] * (at - b[4])
                        b[3] = value = float(value)
                        b[4] = at
                        if value > b[2]:
                            b[2] = value
                else:  # these may replace or drop a series: nothing kept across them
                    load_name = None
                    if at == _STATE:
                        self._service_state(*event[1:])
                    elif at == _HANDLER:
                        self._handler_run(*event[1:])
                    elif at == _RECORDS:
                        count_dispatches(event[2], event[3], self._service_row, {}, 0)
                    else:
                        self._service_removed(event[2])
        except BaseException:
            # a failing event is dropped (as one taken off alone would be); the rest wait
            # for the next drain, in order
            pending.extendleft(reversed(list(events)))
            raise

    def add_upstream(self, drain: Callable[[], None]) -> None:
        """Call ``drain`` (a bound method, held weakly) before each read: a recorder that
        folds its dispatch records in with :meth:`dispatches` hands its pending ones over."""
        with self._lock:
            self._upstream = [ref for ref in self._upstream if ref() is not None]
            self._upstream.append(weakref.WeakMethod(drain))

    def dispatches(
        self,
        records: Iterable[tuple[Any, ...]],
        services: Container[str],
        totals: ServiceStats | None = None,
    ) -> None:
        """Count the dispatch records among ``records`` (flow records, see
        :data:`~.flow.Raw`; others are skipped) of services in ``services``, each in the
        second it ended (its ``ended``, read from :attr:`clock`), and in ``totals`` too
        when given (the recorder's all-time counts, in the same pass: see
        :mod:`.dispatch_counts`). Any thread; the changes handed off before are applied
        first."""
        table = totals.table if totals is not None else {}
        limit = totals.limit if totals is not None else 0
        with self._lock:
            try:
                self._drain_locked()
            finally:  # counted even when a change handed off before failed (then raised)
                count_dispatches(records, services, self._service_row, table, limit)

    def dispatches_left(self, handoff: deque[tuple[Any, ...]], services: Container[str]) -> None:
        """Count the dispatch records still in a recorder's ``handoff``, in the next drain:
        the recorder is gone (its finalizer calls this, from whatever the collector
        interrupted, this history's lock held maybe: so it only hands them off, no lock).
        Never raises."""
        try:
            batch = list(itertools.islice(iter(handoff.popleft, None), len(handoff)))
            if batch:
                self.handoff.append((_RECORDS, 0.0, batch, services))
        except Exception as exc:
            ErrorReporter()("history", "dispatches_left", exc)

    def _service_row(self, name: str, at: float) -> list[float]:
        """The row counting ``name``'s dispatches ended at ``at``: its stored second, or,
        past ``max_series``, a row nobody keeps (the lock is held)."""
        series = self._counter(self._services, name, len(SERVICE_COUNTERS))
        return series.row(at) if series is not None else [math.floor(at), *_ZEROS]

    def _service_state(
        self, at: float, name: str, load: int, queue_depth: int, capacity: int
    ) -> None:
        pair = self._gauges.get(name)
        if pair is None:
            if len(self._gauges) >= self.max_series:
                return
            pair = self._gauges[name] = (
                GaugeSeries(self.horizon, at),
                GaugeSeries(self.horizon, at),
            )
        pair[0].set(load, at)
        pair[1].set(queue_depth, at)
        self._capacity[name] = capacity

    def _service_removed(self, name: str) -> None:
        self._gauges.pop(name, None)
        self._capacity.pop(name, None)
        self._services.pop(name, None)

    def _handler_run(self, at: float, name: str, failed: bool, seconds: float) -> None:
        series = self._counter(self._handlers, name, len(HANDLER_COUNTERS))
        if series is not None:
            row = series.row(at)
            row[1] += 1
            if failed:
                row[2] += 1
            row[3] += seconds

    def _counter(
        self, table: dict[str, CounterSeries], name: str, width: int
    ) -> CounterSeries | None:
        series = table.get(name)
        if series is None and len(table) < self.max_series:
            series = table[name] = CounterSeries(self.horizon, width)
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
        with self._lock:
            upstream = self._upstream = [ref for ref in self._upstream if ref() is not None]
        for ref in upstream:  # (outside the lock: they take theirs, then this one)
            drain = ref()
            if drain is not None:
                drain()
        # Only the newest stored second of a series is ever mutated: copy it, share the rest
        # (the lock is held for pointer copies, not for the computation).
        with self._lock:
            self._drain_locked()
            # Read after the drain: every change applied was stamped before it (a change
            # stamped after ``now`` would add load past the end of the span it is averaged
            # over); a change handed off later waits for the next read.
            now = self.clock()
            gauges = {
                n: (g[0].first, copy_series(g[0].buckets), copy_series(g[1].buckets))
                for n, g in self._gauges.items()
            }
            capacity = dict(self._capacity)
            services = {n: copy_series(s.buckets) for n, s in self._services.items()}
            handlers = {n: copy_series(s.buckets) for n, s in self._handlers.items()}
        for _, load, queue in gauges.values():  # the wall clock stepped back since a change:
            for stored in (load, queue):  # the answer ends no earlier than that change
                if stored and stored[-1][4] > now:
                    now = stored[-1][4]
        since = float(math.floor(max(now - window, self.started)))
        grid = bucket_grid(since, now, step)
        out_services: dict[str, Any] = {}
        for name in sorted(set(gauges) | set(services)):
            entry: dict[str, Any] = {"capacity": capacity.get(name, 0)}
            if name in gauges:
                first, load, queue = gauges[name]
                entry["load"] = gauge_view(load, first, grid, now)
                entry["queue"] = gauge_view(queue, first, grid, now)
            entry.update(counter_view(services.get(name, []), SERVICE_COUNTERS, grid))
            out_services[name] = entry
        return {
            "generated_at": round(now, 3),
            "since": round(since, 3),
            "step": step,
            "buckets": [round(start, 3) for start, _ in grid],
            "services": out_services,
            "handlers": {n: counter_view(b, HANDLER_COUNTERS, grid) for n, b in handlers.items()},
        }
