"""The bus and dispatch counters and histograms kept in plain Python, folded into the
exposition at scrape time.

Why: a prometheus_client ``Counter.inc`` / ``Histogram.observe`` takes a lock and walks the
buckets on every message. Here each recorder (one per :class:`~.bus_metrics.MetricsMiddleware`
or :class:`~.dispatch_metrics.DispatchMetrics`) owns an :class:`Aggregate`: dicts of ints,
a bucket-count list per series, found with one dict lookup and one ``bisect``. One
:class:`AggregateCollector` per registry (a prometheus_client custom collector) sums every
live aggregate, plus what aggregates of collected recorders left behind, into the
``commbus_messages_total`` / ``commbus_message_duration_seconds`` /
``commbus_handler_errors_total`` / ``commbus_timeouts_total`` / ``commbus_inflight_messages``
/ ``commbus_dispatch_*`` families (names and labels as :mod:`.metrics` declares them).

Exactness: an aggregate has one writer, the event-loop thread of the bus or coordinator
that owns its recorder (every update is a plain read-modify-write of a value only that
thread writes, so none is lost); a scrape on another thread only reads (a dict is copied
with ``list(d.items())``, which the GIL makes atomic) and never loses one. A series' outcome
counts and buckets are copied as a pair that holds the same messages (:meth:`Cell.merge`
reads them again while their totals differ), so its ``messages_total`` and its histogram's
``_count`` (the sum of its buckets) agree in every scrape (unless the writer stays
stopped inside one message through 100 reads). When a recorder is
garbage-collected, its counts move to the collector's retired totals under the
collector's lock: counters never go back.

Not for multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``): there values must be in
prometheus_client's files, and :mod:`.metrics` keeps its prometheus_client children.
"""

from __future__ import annotations

import collections
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

__all__ = ["FAMILIES", "Aggregate", "AggregateCollector", "Cell"]

#: name -> (kind, documentation, labels): the families this collector exposes.
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "commbus_messages": (
        "counter", "Bus messages by pattern, type and outcome.",
        ("pattern", "message_type", "outcome"),
    ),
    "commbus_message_duration_seconds": (
        "histogram", "Time from entering the bus until every handler finished.",
        ("pattern", "message_type"),
    ),
    "commbus_handler_errors": (
        "counter", "Handler runs that raised, by error type.",
        ("pattern", "message_type", "error_type"),
    ),
    "commbus_timeouts": (
        "counter",
        "Timed-out queries (target = message type) and dispatches (target = service).",
        ("pattern", "target"),
    ),
    "commbus_inflight_messages": (
        "gauge", "Messages and dispatches in progress.", ("pattern",),
    ),
    "commbus_dispatch": (
        "counter", "Dispatches by service, method and outcome.", ("service", "method", "outcome"),
    ),
    "commbus_dispatch_duration_seconds": (
        "histogram", "Whole dispatch time: slot wait, attempts and backoff.",
        ("service", "method"),
    ),
    "commbus_dispatch_retries": (
        "counter", "Dispatch attempts after the first.", ("service", "method"),
    ),
}  # fmt: skip

#: Most reads of a cell's outcome and bucket counts by :meth:`Cell.merge` until they agree.
_READS = 100


class Cell:
    """One series of a bus message kind ``(pattern, message_type)`` or a dispatch target
    ``(service, method)``: outcome counts, a histogram, error / timeout / retry counts.

    ``quick`` counts the messages that ended "ok" in the first bucket with no exemplar,
    as one number (perf: one increment per such message, the common one, instead of two);
    they are in neither ``outcomes["ok"]`` nor ``counts[0]`` until :meth:`merge` folds them
    into both (every scrape reads cells through it), from one read, so a scrape sees the
    two agree."""

    __slots__ = ("bounds", "counts", "errors", "exemplars", "extra", "outcomes", "quick", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.outcomes: dict[str, int] = {}
        self.counts = [0] * (len(bounds) + 1)  # per bucket (not cumulative), +Inf last
        self.sum = 0.0
        self.exemplars: list[tuple[int, float, float] | None] = [None] * (len(bounds) + 1)
        self.errors: dict[str, int] = {}  # error_type -> handler runs that raised it
        self.extra = [0, 0]  # [timeouts, retries]
        self.quick = 0

    def observe(self, outcome: str, seconds: float, trace_id: int) -> None:
        """Count one message of ``outcome`` that took ``seconds`` (``trace_id``: exemplar;
        an "ok" one in the first bucket with none goes to :attr:`quick`)."""
        bounds = self.bounds
        if outcome == "ok" and not trace_id and seconds <= bounds[0]:
            self.quick += 1
        else:
            outcomes = self.outcomes
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            i = bisect_left(bounds, seconds)
            self.counts[i] += 1
            if trace_id:
                self.exemplars[i] = (trace_id, seconds, time.time())
        self.sum += seconds

    def merge(self, other: Cell) -> None:
        """Add ``other``'s counts to this cell's (``other.quick`` into "ok" and the first
        bucket). Its outcome counts and bucket counts are read as one consistent pair: every
        message adds one to each, so they are read again (the writer let run meanwhile)
        while their totals differ, i.e. while a message is in one and not the other (at most
        :data:`_READS` times; then as read)."""
        quick = other.quick
        if quick:
            self.outcomes["ok"] = self.outcomes.get("ok", 0) + quick
            self.counts[0] += quick
        for _ in range(_READS):
            outcomes = list(other.outcomes.items())
            counts = list(other.counts)
            if sum(n for _, n in outcomes) == sum(counts):
                break
            time.sleep(0)  # the writer is inside a message (or wrote some in between)
        for key, n in outcomes:
            self.outcomes[key] = self.outcomes.get(key, 0) + n
        for key, n in list(other.errors.items()):
            self.errors[key] = self.errors.get(key, 0) + n
        for i, n in enumerate(counts):
            self.counts[i] += n
            theirs, ours = other.exemplars[i], self.exemplars[i]
            if theirs is not None and (ours is None or theirs[2] >= ours[2]):
                self.exemplars[i] = theirs  # the newest exemplar of the bucket
        self.sum += other.sum
        self.extra[0] += other.extra[0]
        self.extra[1] += other.extra[1]


class Aggregate:
    """The counts of one recorder: written by one thread (see the module docstring)."""

    __slots__ = ("bounds", "bus", "dispatch", "inflight")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.inflight: dict[str, int] = {}  # pattern -> messages in progress
        self.bus: dict[tuple[str, str], Cell] = {}  # (pattern, folded message type)
        self.dispatch: dict[tuple[str, str], Cell] = {}  # (folded service, folded method)

    def bus_cell(self, pattern: str, message_type: str) -> Cell:
        cell = self.bus.get((pattern, message_type))
        if cell is None:
            cell = self.bus[pattern, message_type] = Cell(self.bounds)
        return cell

    def dispatch_cell(self, service: str, method: str) -> Cell:
        cell = self.dispatch.get((service, method))
        if cell is None:
            cell = self.dispatch[service, method] = Cell(self.bounds)
        return cell

    def merge(self, other: Aggregate) -> None:
        for pattern, n in list(other.inflight.items()):
            self.inflight[pattern] = self.inflight.get(pattern, 0) + n
        for key, cell in list(other.bus.items()):
            self.bus_cell(*key).merge(cell)
        for key, cell in list(other.dispatch.items()):
            self.dispatch_cell(*key).merge(cell)


class AggregateCollector(Collector):
    """The custom collector of one registry, summing the aggregates of its recorders."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self._lock = threading.Lock()
        self._live: set[Aggregate] = set()
        self._retired = Aggregate(self.bounds)
        #: Aggregates whose owner was garbage-collected, folded into the retired totals
        #: under the lock by the next attach or scrape. The finalizer only appends (atomic,
        #: no lock): it may run on any thread, in the middle of a scrape holding the lock.
        self._dying: collections.deque[Aggregate] = collections.deque()

    def attach(self, owner: object) -> Aggregate:
        """A new aggregate for ``owner``, summed into every scrape; when ``owner`` is
        garbage-collected its counts stay (moved to the retired totals)."""
        aggregate = Aggregate(self.bounds)
        with self._lock:
            self._fold_dying()
            self._live.add(aggregate)
        weakref.finalize(owner, self._dying.append, aggregate).atexit = False
        return aggregate

    def _fold_dying(self) -> None:
        """Move the aggregates of collected owners to the retired totals (lock held)."""
        while self._dying:
            aggregate = self._dying.popleft()
            self._live.discard(aggregate)
            aggregate.inflight.clear()  # nothing of a dead recorder is in progress
            self._retired.merge(aggregate)

    def describe(self) -> Iterable[Any]:
        return [_family(name) for name in FAMILIES]

    def collect(self) -> Iterator[Any]:
        with self._lock:
            self._fold_dying()
            total = Aggregate(self.bounds)
            total.merge(self._retired)
            for aggregate in list(self._live):
                total.merge(aggregate)
        families = {name: _family(name) for name in FAMILIES}
        for (pattern, mtype), cell in sorted(total.bus.items()):
            self._series(families, "commbus_message", (pattern, mtype), cell)
            for etype, n in sorted(cell.errors.items()):
                families["commbus_handler_errors"].add_metric((pattern, mtype, etype), n)
            if pattern == "query":
                families["commbus_timeouts"].add_metric(("query", mtype), cell.extra[0])
        for (service, method), cell in sorted(total.dispatch.items()):
            self._series(families, "commbus_dispatch", (service, method), cell)
            families["commbus_dispatch_retries"].add_metric((service, method), cell.extra[1])
        timeouts: dict[str, int] = {}  # the timeouts series is per service, not method
        for (service, _), cell in total.dispatch.items():
            timeouts[service] = timeouts.get(service, 0) + cell.extra[0]
        for service, n in sorted(timeouts.items()):
            families["commbus_timeouts"].add_metric(("dispatch", service), n)
        for pattern, n in sorted(total.inflight.items()):
            families["commbus_inflight_messages"].add_metric((pattern,), n)
        yield from families.values()

    def _series(
        self, families: dict[str, Any], prefix: str, labels: tuple[str, str], cell: Cell
    ) -> None:
        counter = families["commbus_dispatch" if prefix == "commbus_dispatch" else prefix + "s"]
        for outcome, n in sorted(cell.outcomes.items()):
            counter.add_metric((*labels, outcome), n)
        buckets: list[Any] = []
        cumulative = 0
        for i, n in enumerate(cell.counts):
            cumulative += n
            bound = _le(self.bounds[i]) if i < len(self.bounds) else "+Inf"
            found = cell.exemplars[i]
            if found is None:
                buckets.append((bound, cumulative))
            else:
                trace_id, value, stamp = found
                exemplar = Exemplar({"trace_id": format(trace_id, "032x")}, value, stamp)
                buckets.append((bound, cumulative, exemplar))
        families[prefix + "_duration_seconds"].add_metric(labels, buckets, cell.sum)


def _family(name: str) -> Any:
    kind, doc, labels = FAMILIES[name]
    if kind == "counter":
        return CounterMetricFamily(name, doc, labels=labels)
    if kind == "histogram":
        return HistogramMetricFamily(name, doc, labels=labels)
    return GaugeMetricFamily(name, doc, labels=labels)


def _le(bound: float) -> str:
    """A bucket bound as prometheus_client's own histograms spell it."""
    text: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
    return text
