"""What the bus probe's paths share (:mod:`.bus_probe`, :mod:`.fast_report`): its report
reached through a weak reference, and how a message's error and payload are recorded."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from .semconv import error_type

__all__ = ["flow_error", "one_error", "payload_repr", "weak_report"]

_PAYLOAD_LIMIT = 200


def weak_report(probe: Any) -> Callable[..., None]:
    """``probe.report`` through a weak reference, for the closure kept as ``probe.message``:
    a bound method there would put the probe in a reference cycle, so a dropped bus's probe
    (its aggregate, cells, flow writer entry) would outlive the bus until a full collection.
    The routes hold the probe itself while they can report to it; should it be gone, the
    message still leaves ``inflight``, as the probe contract says."""
    ref = weakref.ref(probe)
    inflight = probe.inflight

    def report(pattern: str, *rest: Any) -> None:
        live = ref()
        if live is not None:
            live.report(pattern, *rest)
        else:
            inflight[pattern] -= 1

    return report


def one_error(error: Any) -> BaseException | None:
    """One exception for ``error`` (a list of subscriber errors becomes its only one, or a
    group of them)."""
    if isinstance(error, list):
        if len(error) == 1:
            return error[0]  # type: ignore[no-any-return]
        return ExceptionGroup(f"{len(error)} subscribers failed", error)
    return error  # type: ignore[no-any-return]


def flow_error(error: Any) -> str:
    """The ``error_type`` of a flow record for ``error`` (one exception, or a list)."""
    if isinstance(error, list):
        return error_type(error[0]) if len(error) == 1 else "ExceptionGroup"
    return error_type(error)


def payload_repr(message: Any) -> str:
    """A message's ``repr`` for a flow record, cut to 200 characters."""
    try:
        text = repr(message)
    except Exception:
        return f"<unrepresentable {type(message).__name__}>"
    return text[:_PAYLOAD_LIMIT]
