"""BatchReceive: the span of one batch a transport read at once, linking its messages."""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.trace import Span

from ..instrumentation import propagation as propagate  # the one place it happens

__all__ = ["BatchReceive"]

OnError = Callable[[str, str, BaseException], None]


class BatchReceive:
    """The recording span of one batch read (:meth:`TracingMiddleware.receive_batch`):
    :meth:`link` adds a message's producer context from its headers, :meth:`end` ends it.
    Never raises."""

    __slots__ = ("_on_error", "_span")

    def __init__(self, span: Span, on_error: OnError) -> None:
        self._span = span
        self._on_error = on_error

    def link(self, headers: dict[str, str]) -> None:
        try:
            linked = trace.get_current_span(propagate.extract(headers)).get_span_context()
            if linked.is_valid:
                self._span.add_link(linked)
        except Exception as exc:
            self._on_error("tracing", "batch_link", exc)

    def end(self) -> None:
        try:
            self._span.end()
        except Exception as exc:
            self._on_error("tracing", "batch_end", exc)
