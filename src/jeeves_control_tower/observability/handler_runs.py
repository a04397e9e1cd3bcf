"""HandlerRuns: the per-handler hooks of a flow recorder built with ``handler_runs=True``.

An instrumented bus tells its flow recorder of each message through its probe, not through
middleware; the recorder's handler hooks (one history entry per handler run) must run
around each handler, so they ride the chain in this middleware of their own. Opt-in: a
handler hook makes the bus run each handler in a context copy.
"""

from __future__ import annotations

from typing import Any

from ..ipc import MiddlewareContext

__all__ = ["HandlerRuns"]


class HandlerRuns:
    """Middleware calling ``recorder.handler_start`` / ``handler_end`` around each handler."""

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder
        self.handler_start = recorder.handler_start
        self.handler_end = recorder.handler_end

    def before(self, ctx: MiddlewareContext, message: Any) -> Any:
        return message
