"""Untrusted JSON fields made display-safe: clipped text, finite numbers, counts,
literal markdown."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["MAX_TEXT", "count", "md_escape", "number", "text"]

#: The longest text shown (longer is clipped with an ellipsis).
MAX_TEXT = 120


def text(value: Any, default: str = "") -> str:
    """A display-safe string: non-strings become ``default``, long ones are clipped."""
    if not isinstance(value, str):
        return default
    clean: str = value.replace("\n", " ").replace("\r", " ")
    return clean if len(clean) <= MAX_TEXT else clean[: MAX_TEXT - 1] + "…"


def number(value: Any, default: float = 0.0) -> float:
    """A finite number, or ``default`` (booleans and non-numbers too)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return float(value) if math.isfinite(value) else default


def count(value: Any) -> int:
    """A count: :func:`number`, truncated, never below 0."""
    return max(0, int(number(value)))


def md_escape(value: object) -> str:
    """``value`` as literal text inside Streamlit markdown: every ASCII punctuation mark is
    backslash-escaped (no links, images, emphasis, ``:colour[...]`` directives or emoji
    shortcodes can be smuggled in) and line breaks become spaces."""
    flat = " ".join(str(value).split())
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in flat)


_MD_SPECIAL = frozenset("\\`*_{}[]()<>#+-.!|~:$&\"'=/@%^;,?")
