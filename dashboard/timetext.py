"""How the page writes times and spans: 24-hour UTC clocks, ``M min SS s`` spans."""

from __future__ import annotations

import time

from . import data

__all__ = ["clock", "span_text", "spans_text"]


def spans_text(cover: data.Coverage) -> str:
    """The span(s) the rates are over: one, or each endpoint's (its rate over its own)."""
    spans = {url: cover.span(url) for url in cover.starts}
    if len(set(map(round, spans.values()))) <= 1:
        return f"the last {span_text(next(iter(spans.values()), cover.now - cover.window_start))}"
    each = ", ".join(f"{data.md_escape(u)} {span_text(s)}" for u, s in spans.items())
    return f"each endpoint's own span, rates summed ({each})"


def span_text(span_s: float) -> str:
    """A span as ``M min SS s`` (or ``S s`` under a minute)."""
    minutes, seconds = divmod(round(span_s), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def clock(at: float) -> str:
    """``at`` (epoch seconds) as 24-hour UTC ``HH:MM:SS``."""
    return time.strftime("%H:%M:%S", time.gmtime(at))
