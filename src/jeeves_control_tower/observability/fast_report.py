"""The common case of :meth:`.bus_probe.BusProbe.report`, as one function over local state.

Per message, the probe's ``message`` is called once (see
:class:`jeeves_control_tower.ipc.telemetry.MessageProbe`). Most messages are the same case:
their series is bound, nothing raised, the OpenTelemetry metrics are neither live nor due
for a look and no watch is due (one comparison with the probe's ``due`` time), and the flow
(if any) hands records off without a sink or payloads. :func:`common_case` makes that case
a closure whose state is in local variables (perf: no attribute lookups, no branches for
the other cases) and hands every other message to ``report`` unchanged, so both paths
count exactly the same things; :func:`ok_case` does the same for the messages of one route
that ended "ok" (``BusProbe.ended_ok``). Event-loop thread only, like the probe.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from opentelemetry.context import get_current

from ._context import recording_trace_id

__all__ = ["common_case", "ok_case"]

_perf = time.perf_counter
_now = time.time


def common_case(
    cells: dict[tuple[str, str], Any],
    inflight: dict[str, int],
    flow: Any,
    handoff: Any,
    drain_at: int,
    due: list[float],
    report: Callable[..., None],
    on_error: Callable[[str, str, BaseException], None],
) -> Callable[..., None]:
    """The probe's ``message``: ``cells`` maps a raw ``(pattern, message_type)`` to its bound
    ``(Cell, folded type)``; ``inflight`` is the probe's; ``flow`` its recorder or ``None``,
    with ``handoff`` and ``drain_at`` read from it; ``due[0]``: the start time from which
    every message goes to ``report`` (the probe's watches or its OpenTelemetry metrics are
    due, or those are live); ``report``: the probe's general path; ``on_error``: its error
    reporter."""
    cells_get = cells.get

    def message(
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
        seconds = _perf() - started
        found = cells_get((pattern, message_type))
        if (
            found is None
            or error is not None
            or started >= due[0]
            or (flow is not None and flow.sink is not None)
        ):
            report(
                pattern, direction, system, message_type, started, outcome, handlers, error,
                trace_id, message,
            )  # fmt: skip
            return
        try:  # counted, then out of flight, as in report()
            try:
                if trace_id is None:
                    trace_id = recording_trace_id() if get_current() else 0
                cell = found[0]
                bounds = cell.bounds
                if outcome == "ok" and not trace_id and seconds <= bounds[0]:
                    cell.quick += 1  # as in ok_case
                else:
                    outcomes = cell.outcomes
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
                    i = bisect_left(bounds, seconds)
                    cell.counts[i] += 1
                    if trace_id:
                        cell.exemplars[i] = (trace_id, seconds, _now())
                    if outcome == "timeout":
                        cell.extra[0] += 1
                cell.sum += seconds
            except Exception as exc:
                on_error("metrics", "message", exc)
            if flow is not None:
                try:
                    if handlers.__class__ is list:  # a chain's: as report() does (GC, perf)
                        handlers = tuple(handlers)
                    handoff.append(
                        (
                            started, pattern, message_type, handlers, seconds, outcome, None,
                            trace_id, None, 0,
                        )
                    )  # fmt: skip
                    if len(handoff) >= drain_at:
                        flow.drain()
                except Exception as exc:
                    on_error("flow", "message", exc)
        finally:
            inflight[pattern] -= 1

    return message


def ok_case(
    pattern: str,
    direction: str,
    system: str,
    cells: dict[str, Any],
    bounds: tuple[float, ...],
    inflight: dict[str, int],
    flow: Any,
    handoff: Any,
    drain_at: int,
    due: list[float],
    report: Callable[..., None],
    on_error: Callable[[str, str, BaseException], None],
) -> Callable[[str, float, Any, Any], None]:
    """The probe's ``ended_ok(pattern, direction, system)``: :func:`common_case` for the
    messages of one route that ended ``"ok"`` with no error and no trace id looked up
    (``handlers`` a tuple), called with the four arguments that vary. ``cells`` maps a raw
    message type of ``pattern`` to its bound :class:`~.aggregate.Cell`; ``bounds``: the
    cells' bucket bounds. Every other case goes to ``report`` as it came."""
    cells_get = cells.get
    first = bounds[0]

    def ok(message_type: str, started: float, handlers: Any, message: Any) -> None:
        seconds = _perf() - started
        found = cells_get(message_type)
        if found is None or started >= due[0] or (flow is not None and flow.sink is not None):
            report(
                pattern, direction, system, message_type, started, "ok", handlers, None, None,
                message,
            )  # fmt: skip
            return
        trace_id = 0
        try:  # counted, then out of flight, as in report()
            try:
                trace_id = recording_trace_id() if get_current() else 0
                if seconds <= first and not trace_id:
                    found.quick += 1  # "ok" in the first bucket (Cell.quick)
                else:
                    outcomes = found.outcomes
                    try:
                        outcomes["ok"] += 1
                    except KeyError:
                        outcomes["ok"] = 1
                    i = bisect_left(bounds, seconds)
                    found.counts[i] += 1
                    if trace_id:
                        found.exemplars[i] = (trace_id, seconds, _now())
                found.sum += seconds
            except Exception as exc:
                on_error("metrics", "message", exc)
            if flow is not None:
                try:
                    handoff.append(
                        (
                            started, pattern, message_type, handlers, seconds, "ok", None,
                            trace_id, None, 0,
                        )
                    )  # fmt: skip
                    if len(handoff) >= drain_at:
                        flow.drain()
                except Exception as exc:
                    on_error("flow", "message", exc)
        finally:
            inflight[pattern] -= 1

    return ok
