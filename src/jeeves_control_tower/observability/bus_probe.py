"""BusProbe: the bus's metrics and flow record, told once per message by the bus itself.

The :class:`~jeeves_control_tower.ipc.telemetry.MessageProbe` of one instrumented bus (see
that seam for what the bus calls, when and on which thread). Per message, one call of
:meth:`BusProbe.message` does everything metrics and flow need, with no lock:

- the Prometheus side, outside multiprocess mode: the outcome count, bucket count and sum
  of the message's series, plain ints and floats in this probe's
  :class:`~.aggregate.Aggregate` (folded into ``/metrics`` at scrape time by the registry's
  collector; the in-flight counts the bus keeps in :attr:`BusProbe.inflight` are that
  aggregate's); the bucket keeps the trace id of the message's recording span as an
  exemplar. In multiprocess mode the same updates go to prometheus_client children bound
  once per series (their files are what a scrape of the pre-fork server reads);
- the OpenTelemetry messaging metrics, when a real meter provider is configured;
- the flow record, handed off to the :class:`~.flow.FlowRecorder` (a ``deque`` append).

The series of a ``(pattern, message_type)`` is found with one dict lookup (a bounded cache
keyed by the raw type, in front of the label limiter). Single writer: the bus's
event-loop thread; never raises (failures go to ``on_error``).
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from opentelemetry.context import get_current as _get_current

from ._context import recording_trace_id
from .aggregate import Cell
from .fast_report import common_case, ok_case
from .inflight_counts import InflightCounts
from .metrics import BusSeries, CommBusMetrics
from .otel_metrics import OtelMetrics, outcome_error
from .probe_support import flow_error, one_error, payload_repr, weak_report
from .semconv import error_type

__all__ = ["BusProbe", "payload_repr"]

OnError = Callable[[str, str, BaseException], None]
_now = time.time
_perf = time.perf_counter
_bisect = bisect_left
#: Most raw ``(pattern, message_type)`` keys cached per probe; past it, the (bounded,
#: folding) lookup in :class:`CommBusMetrics` is used for the new ones.
_CACHE_LIMIT = 4096


class BusProbe:
    """Metrics (Prometheus, OpenTelemetry) and flow records of one bus's messages.

    ``metrics`` ``None``: no metrics; ``flow`` ``None``: no flow records. Counts
    ``commbus_messages_total``, ``commbus_message_duration_seconds``,
    ``commbus_handler_errors_total`` (each failing handler run once: every failing subscriber
    of a publish; errors of middleware and timeouts are not handler errors),
    ``commbus_timeouts_total{pattern="query"}`` and ``commbus_inflight_messages``.
    """

    def __init__(
        self,
        metrics: CommBusMetrics | None,
        *,
        otel: OtelMetrics | None = None,
        flow: Any = None,
        on_error: OnError,
    ) -> None:
        self.metrics = metrics
        self.otel = otel
        self.flow = flow
        self._on_error = on_error
        collector = metrics.aggregate if metrics is not None else None
        self._aggregate = collector.attach(self) if collector is not None else None
        self.inflight: dict[str, int] = (
            self._aggregate.inflight
            if self._aggregate is not None
            else InflightCounts(metrics, on_error)
            if metrics is not None
            else {}
        )
        self._cells: dict[tuple[str, str], tuple[Cell, str]] = {}  # raw key -> (cell, type)
        #: The same, by pattern then raw type (what :meth:`ended_ok`'s functions look in).
        self._typed: dict[str, dict[str, Cell]] = {}
        self._series: dict[tuple[str, str], BusSeries] = {}  # multiprocess: raw key -> children
        self._record_payloads = bool(getattr(flow, "record_payloads", False))
        self._handoff = getattr(flow, "handoff", None)
        self._drain_at = getattr(flow, "drain_at", getattr(flow, "capacity", 0))
        if flow is not None:
            flow.add_writer(self)
        self._watches: list[Callable[[float], float]] = []
        self._watch_next = math.inf  # when the next message runs the watches (add_watch)
        #: The start time from which the common-case functions (:mod:`.fast_report`) hand
        #: every message to :meth:`report`: the soonest of the watches' time and the
        #: OpenTelemetry metrics' next look, ``-inf`` while those metrics are live. Set by
        #: :meth:`report` after each message it sees (so OpenTelemetry metrics made live by
        #: another of their users, a coordinator sharing them, record this bus's messages
        #: from the first one that starts after the look that was due).
        self._due = [-math.inf]
        #: :meth:`MessageProbe.message <jeeves_control_tower.ipc.telemetry.MessageProbe.message>`:
        #: :meth:`report` (the class's), or, when counts go to the aggregate, a function that
        #: does the common case of :meth:`report` with its state in local variables and hands
        #: every other case to it (perf: it runs once per message). Never a bound method kept
        #: on the instance: that would put the probe in a reference cycle.
        fast = self._fast_report()
        if fast is not None:
            self.message = fast

    def add_watch(self, watch: Callable[[float], float]) -> None:
        """Call ``watch(now)`` with the start (a ``time.perf_counter()`` reading) of the next
        message reported, then of the first one at or after the time it returns
        (``math.inf``: never). On the bus's event-loop thread, before the message is
        counted; a watch that raises is reported to ``on_error`` and not called again.
        What keeps a polled state (no tracer provider yet, say) off the per-message path."""
        self._watches.append(watch)
        self._watch_next = self._due[0] = -math.inf

    def _look(self, now: float) -> None:
        soonest = math.inf
        for watch in list(self._watches):
            try:
                soonest = min(soonest, watch(now))
            except Exception as exc:
                self._watches.remove(watch)
                self._on_error("probe", "watch", exc)
        self._watch_next = soonest

    def _next_due(self) -> float:
        """What :attr:`_due` is after a message (see there)."""
        otel = self.otel
        if otel is None:
            return self._watch_next
        return -math.inf if otel.live else min(self._watch_next, otel.next_look)

    def _fast(self) -> bool:
        """Whether the common case can be written out (:mod:`.fast_report`): counts go to
        the aggregate, and the flow, if any, hands records off without payloads."""
        flow = self.flow
        return self._aggregate is not None and (
            flow is None
            or not (self._record_payloads or self._handoff is None or not hasattr(flow, "sink"))
        )

    def _fast_report(self) -> Callable[..., None] | None:
        """:func:`.fast_report.common_case` over this probe's state, or ``None`` (not
        :meth:`_fast`: :meth:`report` it is)."""
        if not self._fast():
            return None
        return common_case(
            self._cells, self.inflight, self.flow, self._handoff, self._drain_at, self._due,
            weak_report(self), self._on_error,
        )  # fmt: skip

    def ended_ok(self, pattern: str, direction: str, system: str) -> Callable[..., None]:
        """``ok(message_type, started, handlers, message)``: the same as
        ``message(pattern, direction, system, message_type, started, "ok", handlers, None,
        None, message)`` (``handlers`` a tuple), for a route whose messages mostly end so
        (see :class:`~jeeves_control_tower.ipc.telemetry.MessageProbe`). With counts in the
        aggregate, :func:`.fast_report.ok_case` (perf: four arguments, one dict lookup)."""
        report = weak_report(self)
        if not self._fast():

            def ok(message_type: str, started: float, handlers: Any, message: Any) -> None:
                report(
                    pattern, direction, system, message_type, started, "ok", handlers, None,
                    None, message,
                )  # fmt: skip

            return ok
        assert self._aggregate is not None
        return ok_case(
            pattern, direction, system, self._typed.setdefault(pattern, {}),
            tuple(self._aggregate.bounds), self.inflight, self.flow, self._handoff,
            self._drain_at, self._due, report, self._on_error,
        )  # fmt: skip

    def report(
        self,
        pattern: str,
        direction: str,
        system: str,
        message_type: str,
        started: float,
        outcome: str,
        handlers: Any,
        error: Any,
        trace_id: int | None,
        message: Any,
    ) -> None:
        """One message done (see :class:`~jeeves_control_tower.ipc.telemetry.MessageProbe`),
        whatever the case. The common case is written out in one frame (perf)."""
        seconds = _perf() - started
        if started >= self._watch_next:
            self._look(started)
        try:  # counted, then out of flight: a reader never sees a message in neither
            if trace_id is None:
                current = _get_current()
                trace_id = 0 if not current else recording_trace_id()
            destination = message_type
            if self.metrics is not None:
                try:
                    cells = self._cells.get((pattern, message_type))
                    if cells is not None:  # the aggregate path, bound: Cell.observe, inlined
                        cell, destination = cells
                        outcomes = cell.outcomes
                        outcomes[outcome] = outcomes.get(outcome, 0) + 1
                        i = _bisect(cell.bounds, seconds)
                        cell.counts[i] += 1
                        cell.sum += seconds
                        if trace_id:
                            cell.exemplars[i] = (trace_id, seconds, _now())
                        if outcome == "timeout":
                            cell.extra[0] += 1
                    elif self._aggregate is not None:
                        destination = self._count(pattern, message_type, seconds, outcome, trace_id)
                    else:
                        destination = self._record(
                            pattern, message_type, seconds, outcome, trace_id
                        )
                    if outcome == "error" and error is not None and handlers:
                        self._handler_errors(pattern, message_type, error)
                except Exception as exc:
                    self._on_error("metrics", "message", exc)
                otel = self.otel
                if otel is not None:
                    try:
                        if otel.live or (started >= otel.next_look and otel.look(started)):
                            self._otel(
                                otel,
                                direction,
                                system,
                                pattern,
                                destination,
                                seconds,
                                outcome,
                                handlers,
                                error,
                            )
                    except Exception as exc:
                        self._on_error("otel_metrics", "message", exc)
            flow = self.flow
            if flow is not None:
                try:
                    if handlers.__class__ is list:
                        # A tuple of names: the record holds nothing the garbage collector
                        # tracks, so it is untracked young instead of scanned in every
                        # collection for as long as it is kept (perf; GC time under load).
                        handlers = tuple(handlers)
                    raw = (
                        started, pattern, message_type, handlers, seconds, outcome,
                        flow_error(error) if error is not None else None, trace_id,
                        payload_repr(message) if self._record_payloads else None, 0,
                    )  # fmt: skip
                    handoff = self._handoff
                    if flow.sink is None and handoff is flow.handoff:  # the lock-free hand-off
                        handoff.append(raw)
                        if len(handoff) >= self._drain_at:
                            flow.drain()
                    else:
                        flow.store(raw)
                except Exception as exc:
                    self._on_error("flow", "message", exc)
        finally:
            self.inflight[pattern] -= 1
            self._due[0] = self._next_due()

    def _otel(
        self,
        otel: OtelMetrics,
        direction: str,
        system: str,
        pattern: str,
        destination: str,
        seconds: float,
        outcome: str,
        handlers: Any,
        error: Any,
    ) -> None:
        """The OpenTelemetry side: a message produced here is sent (direction local/out);
        one delivered to local handlers (local/in) is consumed and processed."""
        assert self.metrics is not None
        etype = outcome_error(outcome, one_error(error), self.metrics.error_types)
        if direction != "in":
            otel.sent(system, pattern, destination, etype, seconds)
        if direction != "out" and handlers:
            otel.consumed(system, destination, etype, seconds)

    def _count(
        self, pattern: str, message_type: str, seconds: float, outcome: str, trace_id: int
    ) -> str:
        """The aggregate path: what :meth:`Cell.observe` does, inlined (perf)."""
        key = (pattern, message_type)
        found = self._cells.get(key)
        if found is None:
            found = self._bind_cell(key)
        cell = found[0]
        outcomes = cell.outcomes
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        i = _bisect(cell.bounds, seconds)
        cell.counts[i] += 1
        cell.sum += seconds
        if trace_id:
            cell.exemplars[i] = (trace_id, seconds, _now())
        if outcome == "timeout":
            cell.extra[0] += 1
        return found[1]

    def _bind_cell(self, key: tuple[str, str]) -> tuple[Cell, str]:
        assert self._aggregate is not None and self.metrics is not None
        message_type = self.metrics.message_types(key[1])
        found = (self._aggregate.bus_cell(key[0], message_type), message_type)
        if len(self._cells) < _CACHE_LIMIT:
            self._cells[key] = found
            self._typed.setdefault(key[0], {})[key[1]] = found[0]
        return found

    def _record(
        self, pattern: str, message_type: str, seconds: float, outcome: str, trace_id: int
    ) -> str:
        """The multiprocess path: prometheus_client children, bound once per series."""
        metrics = self.metrics
        assert metrics is not None
        key = (pattern, message_type)
        series = self._series.get(key)
        if series is None:
            series = metrics.bus_series(pattern, message_type)
            if len(self._series) < _CACHE_LIMIT:
                self._series[key] = series
        counter = series.outcomes.get(outcome)
        if counter is None:
            counter = series.outcomes[outcome] = metrics.messages_total.labels(
                pattern, series.message_type, outcome
            )
        counter.inc()
        if trace_id:
            series.duration.observe(seconds, {"trace_id": format(trace_id, "032x")})
        else:
            series.duration.observe(seconds)
        if outcome == "timeout" and series.timeouts is not None:
            series.timeouts.inc()
        return series.message_type

    def _handler_errors(self, pattern: str, message_type: str, error: Any) -> None:
        """Count each failing handler run in ``error`` under its folded ``error_type``."""
        metrics = self.metrics
        assert metrics is not None
        if isinstance(error, list):
            errors: Any = error
        elif pattern == "publish" and isinstance(error, BaseExceptionGroup):
            errors = error.exceptions
        else:
            errors = (error,)
        labels = [metrics.error_types(error_type(exc)) for exc in errors]
        if self._aggregate is not None:
            cell = self._cells.get((pattern, message_type)) or self._bind_cell(
                (pattern, message_type)
            )
            counts = cell[0].errors
            for label in labels:
                counts[label] = counts.get(label, 0) + 1
            return
        series = self._series.get((pattern, message_type)) or metrics.bus_series(
            pattern, message_type
        )
        for label in labels:
            child = series.errors.get(label)
            if child is None:
                child = series.errors[label] = metrics.handler_errors.labels(
                    pattern, series.message_type, label
                )
            child.inc()


# What the bus calls when no fast path was made (on the class: see BusProbe.__init__).
BusProbe.message = BusProbe.report
