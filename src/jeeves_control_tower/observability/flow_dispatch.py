"""FlowDispatch: one coordinator's dispatches into a shared :class:`~.flow.FlowRecorder`.

The recorder is a dispatch observer itself (for a coordinator a user wires by hand), but it
may be shared by coordinators on several threads, so its own in-flight count takes its
lock. An instrumented coordinator gets this adapter instead: it counts the coordinator's
dispatches in flight in a dict of its own (one writer: the coordinator's event-loop thread;
the recorder sums it for ``/api/stats``), and hands each dispatch's record off to the
recorder without a lock (:meth:`~.flow.FlowRecorder.dispatched`). Never raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..ipc import WholeDispatchObserver
from ..types import DispatchTarget, Envelope, ServiceDescriptor
from ._context import recording_trace_id
from .flow import FlowRecorder

__all__ = ["FlowDispatch"]

OnError = Callable[[str, str, BaseException], None]


class FlowDispatch(WholeDispatchObserver):
    """The flow records and service view of one coordinator, in ``recorder``."""

    def __init__(self, recorder: FlowRecorder, on_error: OnError) -> None:
        self.recorder = recorder
        self.inflight = {"dispatch": 0}
        self._on_error = on_error
        # a change of a service's load alone goes straight to the recorder (no frame here)
        self.load_changed = recorder.load_changed
        recorder.add_writer(self)

    def dispatch_start(self, target: DispatchTarget, envelope: Envelope) -> int:
        self.inflight["dispatch"] += 1
        try:
            return recording_trace_id()
        except Exception as exc:
            self._on_error("flow", "dispatch_start", exc)
            return 0

    def started(self, trace_id: int) -> int:
        """:meth:`dispatch_start` with the current recording trace id already looked up."""
        self.inflight["dispatch"] += 1
        return trace_id

    def dispatch_end(
        self,
        token: Any,
        target: DispatchTarget,
        outcome: str,
        attempts: int,
        error: BaseException | None,
        duration: float,
    ) -> None:
        try:  # recorded, then out of flight: a reader never sees it in neither
            self.recorder.dispatched(token or 0, target, outcome, attempts, error, duration)
        except Exception as exc:
            self._on_error("flow", "dispatch_end", exc)
        finally:
            self.inflight["dispatch"] -= 1

    def service_changed(self, service: ServiceDescriptor, queue_depth: int) -> None:
        self.recorder.service_changed(service, queue_depth)  # guarded there

    def service_removed(self, service: ServiceDescriptor) -> None:
        self.recorder.service_removed(service)  # guarded there
