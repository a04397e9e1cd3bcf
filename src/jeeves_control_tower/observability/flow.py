"""FlowRecorder: the live message-flow feed behind ``/api/flow``, ``/api/services`` and
``/api/stats`` (shapes in ``docs/endpoint.md``).

Fed by the bus's probe (:class:`~.bus_probe.BusProbe`: one record per publish/send/query;
it is also a bus middleware, for a bus without telemetry) and a dispatch observer (one
record per dispatch, per-service counts, a view of the registry). Records live in a ring
of ``capacity`` entries with consecutive sequence numbers (memory bounded under any load);
payloads only with ``record_payloads=True`` (a ``repr`` cut to 200 characters).

Thread-safety: writers run on event-loop threads (any number of buses and coordinators,
on any threads, may share one recorder); the readers (:meth:`flow`, :meth:`services`,
:meth:`stats`) may run on any thread (the HTTP server's). A writer takes no lock: it
appends its record to :attr:`handoff` (a ``deque``, whose ``append`` is atomic), and the
reader, under the recorder's lock, moves what was handed off into the ring, numbering the
records in hand-off order and counting them (:meth:`drain`; a writer drains too, once per
128 records, or ``capacity`` when smaller, so the hand-off stays bounded and is still in
the cache when nobody reads). A drain counts its dispatch records in the :attr:`history`
too, and the history drains the recorder before each read. Every message
handed off before a read is in its answer. In-flight counts are kept per writer
(single-writer dicts) and summed by the reader before it drains; a writer hands its record
off before the message leaves flight, so a message is never in neither: one that ends
during a read may count in both, for that read only. Descriptors are read live (single
attribute reads, atomic under the GIL); the recorder never calls into the coordinator, so a
busy loop never stalls a reader.
Never raises into the message path: failures, a raising ``sink`` too, go to ``on_error``.
"""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from ..ipc import MiddlewareContext, WholeDispatchObserver
from ..ipc.telemetry import LoadLog
from ..types import DispatchTarget, Envelope, ServiceDescriptor
from ._context import message_trace_id, recording_trace_id
from ._guard import ErrorReporter
from .bus_probe import payload_repr as _payload
from .flow_stats import ServiceStats, count_outcomes
from .flow_views import BUS_PATTERNS, record_dict, service_row, stats_body
from .history import History
from .semconv import TIMEOUT, error_type

__all__ = ["DEFAULT_CAPACITY", "MAX_LIMIT", "FlowRecorder"]

OnError = Callable[[str, str, BaseException], None]
#: A record as handed off and kept: (started, pattern, type, handlers, seconds, outcome,
#: error_type, trace_id, payload, attempts), and for a dispatch ``ended`` too;
#: ``started``: a ``time.perf_counter()`` reading (made wall-clock time when read);
#: ``handlers``: entries with a ``name``, or names; ``attempts``: a dispatch's, 0 for a bus
#: message; ``ended``: when a dispatch ended, on the history's clock (the second its
#: history counts it in). Its number is its place in the order.
Raw = tuple[Any, ...]

DEFAULT_CAPACITY = 2000
_DRAIN_AT = 128
#: Most records one :meth:`FlowRecorder.flow` call returns.
MAX_LIMIT = 1000
_perf = time.perf_counter
_now = time.time


class FlowRecorder(WholeDispatchObserver):
    """Bounded flow feed plus per-service dispatch statistics.

    ``sink``, if given, is called with each record (a dict, outside the lock, on the event
    loop thread) once stored (with a sink, writers store at once, under the lock; a sink
    set later sees the records from then on). ``max_services`` bounds the service tables.

    ``history`` (a private :class:`~.history.History` by default) is fed with every
    registry change and every dispatch, so ``/api/history`` can show the past window to a
    client that just arrived. With ``handler_runs=True`` it also gets every bus handler
    run (runs, failures, seconds per handler: what a subscriber-only service did): the
    recorder then is a :class:`~jeeves_control_tower.ipc.bus.middleware.HandlerHook`
    (instrumentation adds :class:`~.handler_runs.HandlerRuns` for it), which makes the bus
    run each handler in a context copy, so it is off by default (about half the rate for
    a publish to three plain subscribers).
    """

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        *,
        record_payloads: bool = False,
        sink: Callable[[dict[str, Any]], Any] | None = None,
        on_error: OnError | None = None,
        max_services: int = 10_000,
        history: History | None = None,
        handler_runs: bool = False,
    ) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
        self.capacity = capacity
        #: Records a writer hands off before it drains them itself (nobody read them
        #: meanwhile): few, so a drain finds them still in the cache.
        self.drain_at = min(capacity, _DRAIN_AT)
        self._failures: list[BaseException] = []  # a drain's, reported after the lock
        self.record_payloads = record_payloads
        self.sink = sink
        self._on_error: OnError | None = on_error
        self._fallback = ErrorReporter()
        self._max_services = max_services
        self._lock = threading.Lock()
        #: The lock-free hand-off from writers (see the module docstring).
        self.handoff: deque[Raw] = deque()
        self._writers: weakref.WeakSet[Any] = weakref.WeakSet()  # each has .inflight
        self._records: deque[Raw] = deque(maxlen=capacity)  # the newest _seq is the last
        self._seq = 0
        self._counts: Counter[tuple[str, str]] = Counter()  # (pattern, outcome) -> records
        self._inflight = dict.fromkeys((*BUS_PATTERNS, "dispatch"), 0)
        self._services: dict[str, list[Any]] = {}  # name -> [descriptor, queue_depth]
        self._stats = ServiceStats(max_services)  # dispatch counts per service
        self._started = _now()
        self._offset = self._started - _perf()
        self.history = history if history is not None else History()
        self.history.add_upstream(self.drain)
        # what is still handed off when this recorder goes is counted in the history then
        weakref.finalize(
            self, self.history.dispatches_left, self.handoff, self._services
        ).atexit = False
        self._stamp = self.history.clock  # a dispatch record's end, on the history's clock
        #: Changes of a service's load alone go straight to the history (``RegistryObserver``).
        self.load_log: LoadLog | None = self.history.load_log
        if handler_runs:  # the bus finds the hook pair by attribute when it compiles
            self.handler_start = self._handler_start
            self.handler_end = self._handler_end

    def adopt_reporter(self, on_error: OnError) -> None:
        """Report failures to ``on_error`` from now on, unless the recorder was given its own
        (instrumentation calls this so failures are counted in its registry; with a shared
        recorder the first instrumentation wins)."""
        if self._on_error is None:
            self._on_error = on_error

    def _report(self, component: str, hook: str, exc: BaseException) -> None:
        (self._on_error or self._fallback)(component, hook, exc)

    @property
    def last_seq(self) -> int:
        """The newest sequence number assigned (0 before the first record)."""
        with self._lock:
            self._drain()
        self._report_failures()
        return self._seq

    def add_writer(self, writer: Any) -> None:
        """Count ``writer.inflight`` (a ``dict[str, int]`` only ``writer`` changes) in
        :meth:`stats` for as long as ``writer`` lives."""
        with self._lock:
            self._writers.add(writer)

    def drain(self) -> None:  # what was handed off, into the ring (see the module docstring)
        with self._lock:
            self._drain()
        self._report_failures()

    def store(self, raw: Raw) -> None:
        """Hand ``raw`` off (no lock), or, with a sink, store it at once and give it to the
        sink. Event-loop thread (any)."""
        if self.sink is None:
            handoff = self.handoff
            handoff.append(raw)
            if len(handoff) >= self.drain_at:
                self.drain()
            return
        with self._lock:
            self._drain()
            self.handoff.append(raw)
            self._drain()
            seq = self._seq
        self._report_failures()
        sink = self.sink
        if sink is not None:
            self._to_sink(sink, seq, raw)

    def _drain(self) -> None:
        """Under the lock: store and count what was handed off, in hand-off order (a
        record's number is its place in that order)."""
        handoff = self.handoff
        n = len(handoff)
        if not n:
            return
        batch = list(itertools.islice(iter(handoff.popleft, None), n))  # the first n, in C
        self._records.extend(batch)
        self._seq += n
        if "dispatch" in count_outcomes(self._counts, batch):
            try:
                self.history.dispatches(batch, self._services, self._stats)
            except Exception as exc:  # numbered and counted here all the same; reported
                self._failures.append(exc)  # once the lock is released (_report_failures)

    def _report_failures(self) -> None:
        """Report what a drain could not count into the history (outside the lock: a
        reporter may read this recorder)."""
        failures = self._failures
        while failures:
            self._report("flow", "history", failures.pop(0))

    def _to_sink(self, sink: Callable[[dict[str, Any]], Any], seq: int, raw: Raw) -> None:
        try:
            sink(record_dict(seq, raw, self._clock_offset(), self.record_payloads))
        except Exception as exc:
            self._report("flow_sink", "sink", exc)

    def before(self, ctx: MiddlewareContext, message: Any) -> Any:
        try:
            with self._lock:
                self._inflight[ctx.pattern] += 1
        except Exception as exc:
            self._report("flow", "before", exc)
        return message

    def after(
        self, ctx: MiddlewareContext, message: Any, result: Any, error: BaseException | None
    ) -> Any:
        try:
            seconds = _perf() - ctx.started
            pattern = ctx.pattern
            raw = (
                ctx.started, pattern, ctx.message_type, tuple(ctx.handlers), seconds,
                ctx.outcome, error_type(error) if error is not None else None,
                message_trace_id(ctx), _payload(message) if self.record_payloads else None, 0,
            )  # fmt: skip
            with self._lock:
                self._inflight[pattern] -= 1
            self.store(raw)
        except Exception as exc:
            self._report("flow", "after", exc)
        return result

    def _handler_start(self, ctx: MiddlewareContext, handler_name: str) -> Any:
        return handler_name, _perf()

    def _handler_end(self, ctx: MiddlewareContext, token: Any, error: BaseException | None) -> None:
        try:
            name, started = token
            self.history.handler_run(name, error is not None, _perf() - started)
        except Exception as exc:
            self._report("flow", "handler_end", exc)

    # ------------------------------------------------------------------ dispatch observer

    def dispatch_start(self, target: DispatchTarget, envelope: Envelope) -> int:
        try:
            with self._lock:
                self._inflight["dispatch"] += 1
            return recording_trace_id()
        except Exception as exc:
            self._report("flow", "dispatch_start", exc)
            return 0

    def dispatch_end(
        self,
        token: Any,
        target: DispatchTarget,
        outcome: str,
        attempts: int,
        error: BaseException | None,
        duration: float,
    ) -> None:
        try:  # recorded, then out of flight (see the module docstring)
            self.dispatched(token or 0, target, outcome, attempts, error, duration)
        except Exception as exc:
            self._report("flow", "dispatch_end", exc)
        finally:
            with self._lock:
                self._inflight["dispatch"] -= 1

    def dispatched(
        self,
        trace_id: int,
        target: DispatchTarget,
        outcome: str,
        attempts: int,
        error: BaseException | None,
        duration: float,
        started: float | None = None,
    ) -> None:
        """One dispatch done, ``duration`` seconds after ``started`` (a
        ``time.perf_counter()`` reading; ``None``: now minus ``duration``): its record handed
        off (no lock; the history counts it when the record is drained, in the second it
        ended, if this recorder showed its service then). For a writer that counts its own
        in-flight dispatches (see :meth:`add_writer`)."""
        name = target.service_name
        if outcome == "ok":
            etype = None
        elif outcome == "error" and error is not None:
            etype = error_type(error)
        else:
            etype = TIMEOUT if outcome == "timeout" else outcome
        raw = (
            _perf() - duration if started is None else started, "dispatch", target.method,
            (name,), duration, outcome, etype, trace_id, None, attempts,
            self._stamp() if name in self._services else None,
        )  # fmt: skip
        self.store(raw)

    def service_changed(self, service: ServiceDescriptor, queue_depth: int) -> None:
        try:
            row = self._services.get(service.name)
            if row is not None and row[0] is service:
                row[1] = queue_depth  # one atomic store, no lock
            else:
                with self._lock:
                    row = self._services.get(service.name)
                    if row is not None and row[0] is service:
                        row[1] = queue_depth
                    elif row is not None or len(self._services) < self._max_services:
                        self._services[service.name] = [service, queue_depth]
                    else:
                        return
            self.history.service_state(
                service.name, service.current_load, queue_depth, service.max_concurrent
            )
        except Exception as exc:
            self._report("flow", "service_changed", exc)

    def service_removed(self, service: ServiceDescriptor) -> None:
        try:
            with self._lock:
                self._drain()  # what it dispatched before, counted before it goes
                self._services.pop(service.name, None)
                self._stats.remove(service.name)
            self._report_failures()
            self.history.service_removed(service.name)
        except Exception as exc:
            self._report("flow", "service_removed", exc)

    # ------------------------------------------------------------------ reading

    def _clock_offset(self) -> float:
        """Wall clock minus perf clock for the records' times: fixed (a record reads the same
        every time), set again when the clocks drift apart by more than a millisecond."""
        now = _now() - _perf()
        if abs(now - self._offset) > 0.001:
            self._offset = now
        return self._offset

    def flow(self, after: int = 0, limit: int = 200) -> dict[str, Any]:
        """``{"last_seq": N, "records": [...]}``: records with ``seq > after``, oldest
        first, at most ``limit`` (1..1000; ``ValueError`` otherwise, or for ``after < 0``).
        A client whose ``after`` exceeds ``last_seq`` is talking to a new recorder (the
        process restarted) and should start again from 0."""
        if not isinstance(after, int) or after < 0:
            raise ValueError("after must be an int >= 0")
        if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be an int within 1..{MAX_LIMIT}")
        with self._lock:
            self._drain()
            last = self._seq
            records = self._records
            first = last - len(records) + 1  # the number of the oldest record kept
            start = max(0, after + 1 - first)
            chosen = list(itertools.islice(records, start, start + limit))
        self._report_failures()
        offset = self._clock_offset()
        first += start
        return {
            "last_seq": last,
            "records": [
                record_dict(first + i, r, offset, self.record_payloads)
                for i, r in enumerate(chosen)
            ],
        }

    def services(self) -> list[dict[str, Any]]:
        """The registry as last reported, in registration order, with dispatch counts."""
        with self._lock:
            self._drain()
            rows = [(d, q, self._stats.of(n)) for n, (d, q) in self._services.items()]
        self._report_failures()
        return [service_row(d, queue_depth, stats) for d, queue_depth, stats in rows]

    def stats(self) -> dict[str, Any]:
        """Totals since the recorder was created (the ``/api/stats`` body)."""
        with self._lock:
            # In flight first, then the drain (see the module docstring).
            inflight = dict(self._inflight)
            for writer in list(self._writers):
                for pattern, n in list(writer.inflight.items()):
                    inflight[pattern] = inflight.get(pattern, 0) + n
            self._drain()
            counts = list(self._counts.items())
            descriptors = [row[0] for row in self._services.values()]
            last = self._seq
        self._report_failures()
        return stats_body(
            _now() - self._started, counts, inflight, descriptors, last, self.capacity
        )
