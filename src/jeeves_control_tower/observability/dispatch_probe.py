"""DispatchProbe: a coordinator's metrics and flow, told once per dispatch by the coordinator.

The :class:`~jeeves_control_tower.ipc.telemetry.DispatchProbe` of one instrumented
coordinator (see that seam for what the coordinator calls, when and on which thread): the
dispatch twin of :class:`~.bus_probe.BusProbe`. Per dispatch, the coordinator counts it in
:attr:`DispatchProbe.inflight` when it starts and makes one call of
:meth:`DispatchProbe.dispatched` when it ends, which

- looks up the trace id of the current recording span once (the dispatch span, when a
  tracer observes the coordinator too: the probe is told before the observers end), for
  the metrics' exemplar and the flow record;
- counts the dispatch in the :class:`~.dispatch_metrics.DispatchMetrics` (Prometheus,
  OpenTelemetry), and hands its record off to the :class:`~.flow.FlowRecorder` (and its
  history);
- takes it out of flight, last: a reader never sees a dispatch in neither.

Registry changes go to both; a change of a service's load alone (twice per dispatch) only
to the parts that need it: the flow's history, and the metrics' gauges in multiprocess mode
(outside it they read the live descriptor when scraped). Single writer: the coordinator's
event-loop thread; never raises (failures go to ``on_error``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from opentelemetry.context import get_current as _get_current

from ..types import DispatchTarget, ServiceDescriptor
from ._context import recording_trace_id
from .dispatch_metrics import DispatchMetrics
from .flow import FlowRecorder

__all__ = ["DispatchProbe"]

OnError = Callable[[str, str, BaseException], None]
_perf = time.perf_counter


class DispatchProbe:
    """Metrics (``None``: none) and flow records (``None``: none) of one coordinator's
    dispatches. ``inflight["dispatch"]`` is the metrics' in-flight count, and the flow
    recorder sums it for ``/api/stats``."""

    def __init__(
        self,
        metrics: DispatchMetrics | None,
        flow: FlowRecorder | None,
        *,
        on_error: OnError,
    ) -> None:
        self.metrics = metrics
        self.flow = flow
        self._on_error = on_error
        self.inflight: dict[str, int] = (
            metrics.inflight_counts() if metrics is not None else {"dispatch": 0}
        )
        hooks: list[Callable[[ServiceDescriptor, int], None]] = []
        #: the flow's history takes each change of load alone (see RegistryObserver)
        self.load_log = None
        if flow is not None:
            flow.add_writer(self)
            self.load_log = flow.load_log
            if self.load_log is None:  # (a recorder that wants every step as a change)
                hooks.append(flow.service_changed)
        if metrics is not None and metrics.observes_load:
            hooks.append(metrics.service_changed)
        # what a change of load alone calls (see RegistryObserver): the one part that wants
        # it, with no frame here, or both in turn; none: the registry calls nothing
        self.load_changed: Callable[[ServiceDescriptor, int], None] | None = None
        if len(hooks) == 1:
            self.load_changed = hooks[0]
        elif hooks:
            both = tuple(hooks)

            def load_changed(service: ServiceDescriptor, queue_depth: int) -> None:
                for hook in both:
                    hook(service, queue_depth)  # each guarded itself

            self.load_changed = load_changed
        self.observes_load = bool(hooks) or self.load_log is not None

    def dispatched(
        self,
        target: DispatchTarget,
        outcome: str,
        attempts: int,
        error: BaseException | None,
        started: float,
    ) -> None:
        """One dispatch done (see :class:`~jeeves_control_tower.ipc.telemetry.DispatchProbe`)."""
        now = _perf()
        duration = now - started
        try:  # counted, then out of flight: a reader never sees a dispatch in neither
            try:
                trace_id = recording_trace_id() if _get_current() else 0
            except Exception as exc:
                self._on_error("probe", "dispatched", exc)
                trace_id = 0
            metrics = self.metrics
            if metrics is not None:
                metrics.count(trace_id, target, outcome, attempts, error, duration, now)
            flow = self.flow
            if flow is not None:
                try:
                    flow.dispatched(trace_id, target, outcome, attempts, error, duration, started)
                except Exception as exc:
                    self._on_error("flow", "dispatch_end", exc)
        finally:
            self.inflight["dispatch"] -= 1

    def service_changed(self, service: ServiceDescriptor, queue_depth: int) -> None:
        if self.metrics is not None:
            self.metrics.service_changed(service, queue_depth)  # guarded there
        if self.flow is not None:
            self.flow.service_changed(service, queue_depth)  # guarded there

    def close(self) -> None:
        """The coordinator is no longer watched through this probe (its telemetry was
        closed): the metrics withdraw what registry changes put in them (see
        :meth:`.dispatch_metrics.DispatchMetrics.close`). A dispatch still in flight is
        counted when it ends, and the flow hears the slot it gives back."""
        if self.metrics is not None:
            self.metrics.close()

    def service_removed(self, service: ServiceDescriptor) -> None:
        if self.metrics is not None:
            self.metrics.service_removed(service)  # guarded there
        if self.flow is not None:
            self.flow.service_removed(service)  # guarded there
