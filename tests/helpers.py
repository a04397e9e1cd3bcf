"""Test helpers shared across the suite."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import pytest


class ListLogger:
    """A structlog-style logger that records (level, message, fields)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def _add(self, level: str, message: str, fields: dict[str, Any]) -> None:
        self.records.append((level, message, fields))

    def debug(self, message: str, /, **fields: Any) -> None:
        self._add("debug", message, fields)

    def info(self, message: str, /, **fields: Any) -> None:
        self._add("info", message, fields)

    def warning(self, message: str, /, **fields: Any) -> None:
        self._add("warning", message, fields)

    def error(self, message: str, /, **fields: Any) -> None:
        self._add("error", message, fields)

    def bind(self, **fields: Any) -> ListLogger:
        return self

    def messages(self, level: str | None = None) -> list[str]:
        return [m for lv, m, _ in self.records if level is None or lv == level]


def stop_process(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10.0
) -> None:
    """Send ``sig`` (if it still runs) and wait ``timeout`` seconds; then SIGKILL and wait."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def unavailable(message: str) -> NoReturn:
    """A tool or broker a test needs is missing: skip locally, fail in CI (``CI`` set),
    where every test must run for real."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: this test must run)")
    pytest.skip(message)


def gated(gate: asyncio.Event) -> Any:
    """A dispatch handler that holds its slot until ``gate`` is set."""

    async def handler(envelope: Any) -> Any:
        await gate.wait()
        return envelope

    return handler


class Memory:
    """What :func:`traced_memory` measures, from where it began."""

    def __init__(self) -> None:
        self.before = tracemalloc.get_traced_memory()[0]

    def read(self) -> tuple[int, int]:
        """Bytes allocated since it began and still held, and at most held at once."""
        current, peak = tracemalloc.get_traced_memory()
        return current - self.before, peak - self.before


@contextmanager
def traced_memory() -> Iterator[Memory]:
    """Trace allocations for the block (when something traces already, ``PYTHONTRACEMALLOC``
    say, it is left on and only its peak is reset); the block reads with ``Memory.read``."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    memory = Memory()
    try:
        yield memory
    finally:
        if started:
            tracemalloc.stop()
