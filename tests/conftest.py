"""Shared fixtures: a fresh, uninstrumented bus and coordinator per test.

Telemetry has its own tests (tests/observability); the core tests run without it so they
exercise the bare bus."""

from __future__ import annotations

import ast
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus, RetryPolicy, reset_commbus
from jeeves_control_tower.logging import NullLogger


def _serialise_ast_parse() -> None:
    """CPython 3.11 (3.11.7 here) keeps the AST converter's recursion depth in state shared
    by every thread: two threads inside ``ast.parse`` at once (one switched out by a
    finaliser run from the garbage collector) can fail with ``SystemError: AST
    constructor recursion depth mismatch``; seen in this suite. The test process has
    several parsers running at the same time: the demo's thread formats tracebacks for the
    failures it records on spans (3.11's ``traceback`` parses source lines to place its
    carets), Streamlit's AppTest thread parses the dashboard script, pytest rewrites
    asserts. One re-entrant lock makes them take turns; the library is not involved."""
    if getattr(ast.parse, "_serialised", False):
        return
    lock = threading.RLock()
    parse = ast.parse

    def serialised(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return parse(*args, **kwargs)

    serialised._serialised = True  # type: ignore[attr-defined]
    ast.parse = serialised


_serialise_ast_parse()


@pytest.fixture(autouse=True)
def _fresh_global_bus() -> Iterator[None]:
    reset_commbus()
    yield
    reset_commbus()


@pytest.fixture
def bus() -> InMemoryCommBus:
    return InMemoryCommBus(query_timeout=5.0, instrument=False)


@pytest.fixture
def coordinator(bus: InMemoryCommBus) -> CommBusCoordinator:
    return CommBusCoordinator(
        NullLogger(),
        bus,
        retry_policy=RetryPolicy(initial_delay=0.001, max_delay=0.01, jitter_floor=1.0),
        instrument=False,
    )
