"""DispatchFanout: an instrumented coordinator's one dispatch observer, fanning out to its
parts (tracer, metrics, flow), so the coordinator calls one observer per hook."""

from __future__ import annotations

from typing import Any

from ._context import recording_trace_id

__all__ = ["DispatchFanout"]


class DispatchFanout:
    """One dispatch observer fanning out to the pieces: starts in order, ends in reverse,
    so the tracer's span is still current when the others finish. ``close`` empties
    ``parts`` (the coordinator has no ``remove_observer``); a dispatch already started
    keeps the parts it started with, so its span is still ended and detached."""

    def __init__(self, parts: tuple[Any, ...]) -> None:
        self.parts = parts
        # no part watches attempts (no tracer): the dispatcher then copies no context
        self.observes_attempts = any(getattr(p, "observes_attempts", True) for p in parts)
        # what a change of a service's load alone calls (see RegistryObserver): only the
        # parts that want it (in practice the flow recorder's history), no others
        self.load_hooks = tuple(_load_hook(p) for p in parts if _load_hook(p) is not None)
        # the parts, with (index, watches_attempts or None) of those that watch attempts
        # and each part's dispatch_start, or its started(trace_id) when it has one
        self._attempts: tuple[Any, ...] = (
            parts,
            tuple(
                (i, getattr(p, "watches_attempts", None))
                for i, p in enumerate(parts)
                if getattr(p, "observes_attempts", True)
            ),
            tuple((p.dispatch_start, getattr(p, "started", None)) for p in parts),
        )
        # perf: when every part watches whole dispatches only and takes the trace id
        # (metrics and flow, no tracer), a dispatch is one lookup and one call per part
        # at each end, its token (parts, tokens) (see _start_whole)
        if parts and all(
            not getattr(p, "observes_attempts", True) and getattr(p, "started", None) is not None
            for p in parts
        ):
            self._whole: tuple[tuple[Any, ...], tuple[Any, ...]] = (
                parts,
                tuple(p.started for p in parts),
            )
            self.dispatch_start = self._start_whole  # type: ignore[method-assign]
            self.dispatch_end = self._end_whole  # type: ignore[method-assign]

    def close(self) -> None:
        """Stop: dispatches started from now on, and registry changes, reach no part."""
        self.parts = ()
        self.load_hooks = ()
        self._attempts = ((), (), ())
        self._whole = ((), ())

    def dispatch_start(self, target: Any, envelope: Any) -> tuple[Any, ...]:
        parts, watch, starts = self._attempts
        tokens = []
        trace_id = -1
        for start, started in starts:
            if started is None:
                tokens.append(start(target, envelope))
                continue
            if trace_id < 0:  # one lookup for metrics and flow, after the tracer's start
                try:
                    trace_id = recording_trace_id()
                except Exception:
                    trace_id = 0
            tokens.append(started(trace_id))
        return parts, tokens, watch

    def _start_whole(self, target: Any, envelope: Any) -> tuple[Any, ...]:
        """:meth:`dispatch_start` when every part takes ``started(trace_id)``."""
        parts, starts = self._whole
        if not parts:
            return parts, ()
        try:
            trace_id = recording_trace_id()
        except Exception:
            trace_id = 0
        if len(starts) == 2:  # perf: metrics and flow
            return parts, (starts[0](trace_id), starts[1](trace_id))
        return parts, tuple([started(trace_id) for started in starts])

    def _end_whole(
        self, token: Any, target: Any, outcome: str, attempts: int, error: Any, duration: float
    ) -> None:
        parts, tokens = token
        i = len(parts)
        while i:
            i -= 1
            parts[i].dispatch_end(tokens[i], target, outcome, attempts, error, duration)

    def watches_attempts(self, token: Any) -> bool:
        """Whether a part wants this dispatch's attempts (the tracer: only when its
        dispatch span records); otherwise they run with no attempt hooks."""
        _, tokens, watch = token
        for i, asks in watch:  # noqa: SIM110 - perf: no generator (every dispatch)
            if asks is None or asks(tokens[i]):
                return True
        return False

    def attempt_start(self, token: Any, target: Any, attempt: int) -> list[Any]:
        parts, tokens, watch = token  # only the parts that watch attempts
        return [parts[i].attempt_start(tokens[i], target, attempt) for i, _ in watch]

    def attempt_end(self, token: Any, attempt_token: Any, error: BaseException | None) -> None:
        parts, tokens, watch = token
        for k in range(len(watch) - 1, -1, -1):
            i = watch[k][0]
            parts[i].attempt_end(tokens[i], attempt_token[k], error)

    def dispatch_end(
        self, token: Any, target: Any, outcome: str, attempts: int, error: Any, duration: float
    ) -> None:
        parts, tokens, _ = token
        for i in range(len(parts) - 1, -1, -1):
            parts[i].dispatch_end(tokens[i], target, outcome, attempts, error, duration)

    def service_changed(self, service: Any, queue_depth: int) -> None:
        for p in self.parts:
            p.service_changed(service, queue_depth)

    def load_changed(self, service: Any, queue_depth: int) -> None:
        for hook in self.load_hooks:
            hook(service, queue_depth)

    def service_removed(self, service: Any) -> None:
        for p in self.parts:
            p.service_removed(service)


def _load_hook(part: Any) -> Any:
    """What a change of load alone calls on ``part`` (see RegistryObserver), or ``None``."""
    hook = getattr(part, "load_changed", None)
    if hook is None and getattr(part, "observes_load", True):
        hook = part.service_changed
    return hook
