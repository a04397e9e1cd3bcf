"""Telemetry never breaks the application: how a failing hook is reported.

Every hook of the tracing, metrics and flow pieces wraps its body in ``try/except
Exception`` and hands the exception to an :class:`ErrorReporter`, which counts it in
``commbus_telemetry_errors_total{component}`` (when it has the counter) and logs it, at most
once per ``interval`` seconds per component so a persistently broken exporter cannot flood
the log. The reporter itself never raises.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from ..logging import ensure_logger
from ..types import LoggerProtocol

__all__ = ["ErrorReporter"]


class ErrorReporter:
    """Counts and logs telemetry failures. Thread-safe; never raises.

    ``counter`` is a labelled prometheus_client ``Counter`` with one label (the
    component), or ``None``.
    """

    def __init__(
        self,
        logger: LoggerProtocol | None = None,
        counter: Any = None,
        *,
        interval: float = 10.0,
    ) -> None:
        self._logger = ensure_logger(logger, "jeeves_control_tower.observability")
        self._counter = counter
        self._interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._children: dict[str, Any] = {}
        self.count = 0

    def __call__(self, component: str, hook: str, exc: BaseException) -> None:
        # The last line of defence: reporting must not raise either.
        with contextlib.suppress(Exception):
            self._report(component, hook, exc)

    def _report(self, component: str, hook: str, exc: BaseException) -> None:
        with self._lock:
            self.count += 1
            now = time.monotonic()
            last = self._last.get(component)
            if last is not None and now - last < self._interval:
                self._suppressed[component] = self._suppressed.get(component, 0) + 1
                log = False
            else:
                self._last[component] = now
                log = True
                suppressed = self._suppressed.pop(component, 0)
        if log:
            try:
                text = str(exc)
            except Exception:
                text = "<unprintable>"
            self._logger.error(
                "telemetry_failed",
                component=component,
                hook=hook,
                error_type=type(exc).__qualname__,
                error=text,
                suppressed_since_last_report=suppressed,
            )
        # Counted after the log line, apart: the counter may live on the very backend that
        # failed (a broken multiprocess directory), and the log must not depend on it.
        if self._counter is not None:
            with contextlib.suppress(Exception):
                child = self._children.get(component)
                if child is None:
                    child = self._children[component] = self._counter.labels(component)
                child.inc()
