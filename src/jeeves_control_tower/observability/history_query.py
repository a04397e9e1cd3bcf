"""The ``/api/history`` query string: ``window`` and ``step`` checked
(:func:`history_params`) and answered (:func:`history_body`, shape in
``docs/endpoint.md``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from .history import History

__all__ = ["MAX_BUCKETS", "history_body", "history_params"]

#: Most buckets one ``/api/history`` answer may ask for: ``window / step`` above this is
#: refused (each bucket costs a number per series, and there may be 512 series).
MAX_BUCKETS = 300


def history_params(history: History, query: str) -> tuple[int, int]:
    """``(window, step)`` of a raw ``/api/history`` query string ``window=S&step=S``
    (defaults 300 and 5; ``window / step`` at most :data:`MAX_BUCKETS`), or
    ``ValueError`` with a client-facing message."""
    params = parse_qs(query, keep_blank_values=True)
    unknown = set(params) - {"window", "step"}
    if unknown:
        raise ValueError(f"unknown parameter(s): {', '.join(sorted(unknown))[:200]}")
    values = {}
    for name, default, high in (("window", 300, history.horizon), ("step", 5, history.horizon)):
        given = params.get(name)
        if given and len(given) > 1:
            raise ValueError(f"{name} given more than once")
        text = given[0].strip() if given else str(default)
        if not (text.isascii() and text.isdigit()) or len(text) > 6 or not 1 <= int(text) <= high:
            raise ValueError(f"{name} must be an integer within 1..{high}")
        values[name] = int(text)
    window = min(values["window"], history.horizon)
    step = min(values["step"], window)
    if window > MAX_BUCKETS * step:
        raise ValueError(f"window / step must be at most {MAX_BUCKETS} (buckets per answer)")
    return window, step


def history_body(history: History, query: str) -> dict[str, Any]:
    """The ``/api/history`` body for a raw query string (see :func:`history_params`)."""
    return history.snapshot(*history_params(history, query))
