"""InflightCounts: multiprocess mode's in-flight counts, kept as a dict that also moves this
process's ``commbus_inflight_messages`` gauge (its file), for a bus's or a coordinator's
probe (the core writes ``probe.inflight[pattern] += 1`` with no guard)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["InflightCounts"]


class InflightCounts(dict[str, int]):
    """In-flight counts per pattern that also step the gauge child of each pattern
    (``metrics.inflight_for(pattern)``; other buses and coordinators of the process share
    it, so it moves by steps, never ``set()``). Never raises: a gauge update that fails is
    reported to ``on_error(component, hook, exc)``, and the next one brings the gauge level
    with the count again. Single writer (one event-loop thread)."""

    def __init__(
        self,
        metrics: Any,
        on_error: Callable[[str, str, BaseException], None],
        patterns: Iterable[str] = (),
    ) -> None:
        super().__init__(dict.fromkeys(patterns, 0))
        self._metrics = metrics
        self._on_error = on_error
        self._gauged: dict[str, int] = {}  # what the gauge was given, per pattern

    def __setitem__(self, pattern: str, value: int) -> None:
        super().__setitem__(pattern, value)
        try:
            delta = value - self._gauged.get(pattern, 0)
            if delta:
                self._metrics.inflight_for(pattern).inc(delta)
                self._gauged[pattern] = value
        except Exception as exc:
            self._on_error("metrics", "inflight", exc)
