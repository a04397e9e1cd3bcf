"""The process-wide :class:`~.flow.FlowRecorder` (:func:`default_flow`)."""

from __future__ import annotations

import threading

from .flow import FlowRecorder

__all__ = ["default_flow"]

_default: FlowRecorder | None = None
_default_lock = threading.Lock()


def default_flow() -> FlowRecorder:
    """The process-wide recorder that instrumented buses and coordinators share unless
    given their own."""
    global _default
    with _default_lock:
        if _default is None:
            _default = FlowRecorder()
        return _default
