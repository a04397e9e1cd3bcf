"""The hub's frame checks: the nesting bound holds whatever the strings in a frame hold."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jeeves_control_tower.ipc.adapters.grpc.checks import MAX_DEPTH, frame_problem

# Strings full of what a bracket counter trips on: brackets, quotes, backslashes.
_TEXT = st.text(alphabet='[]{}"\\ ab', max_size=12)
_LEAF = st.none() | st.booleans() | st.integers() | _TEXT


def _nest(value: Any, levels: int, pad: str) -> Any:
    for level in range(levels):
        value = [pad, value] if level % 2 else {"pad": pad, "k": value}
    return value


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _frame(payload: Any) -> bytes:
    return json.dumps({"v": 1, "type": "T", "pattern": "query", "payload": payload}).encode()


@settings(max_examples=300, deadline=None)
@given(
    leaf=st.recursive(_LEAF, lambda kids: st.lists(kids, max_size=3), max_leaves=6),
    levels=st.integers(min_value=0, max_value=2 * MAX_DEPTH),
    pad=_TEXT,
)
def test_too_deep_exactly_when_the_frame_nests_deeper_than_the_limit(
    leaf: Any, levels: int, pad: str
) -> None:
    payload = _nest(leaf, levels, pad)
    too_deep = 1 + _depth(payload) > MAX_DEPTH  # the frame object is level 1
    problem = frame_problem(_frame(payload), "query", "T")
    assert (problem == "too_deep") == too_deep, problem


def test_closing_brackets_in_a_string_do_not_hide_deep_nesting() -> None:
    nested: Any = 0
    for _ in range(4 * MAX_DEPTH):
        nested = [nested]
    data = _frame({"pad": "]" * 1000, "z": nested})
    assert data.index(b"]]]") < data.index(b"[[[")  # the closers come first
    assert frame_problem(data, "query", "T") == "too_deep"


@pytest.mark.parametrize(
    "body",
    [b'"' + b'\\"' * 131_072, b'"\\' * 131_072, b'"' * 262_144],
    ids=["escaped-quotes", "quote-backslash", "quotes"],
)
def test_an_unterminated_string_cannot_make_the_check_backtrack(body: bytes) -> None:
    """The check runs on the hub's event loop: a 256 KiB hostile frame took minutes with a
    backtracking string pattern (quadratic), milliseconds now. The bound is ~1,000 times
    what it takes here, so only a return of the quadratic case can fail it."""
    started = time.perf_counter()
    assert frame_problem(b"[" * 65 + body, "publish", "x") in ("too_deep", "malformed")
    assert time.perf_counter() - started < 5.0
